"""The rows of a store as arrays, for display filters: each filter field's
values over PLAIN rows, read from the columns and the arena bytes.

PLAIN rows have fixed header offsets (IPv4 20 bytes, IPv6 40, then the
transport header), so any field is a gather at a known offset.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from divertgui.engine.address_text import IPV4_MAPPED
from divertgui.engine.header_fields import (
    FILTER_READS, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, IPV4_HEADER_LEN, IPV6_HEADER_LEN,
    UDP_HEADER_LEN, FilterRead,
)
from divertgui.engine.store_record import ARENA_BITS, ARENA_BYTES

if TYPE_CHECKING:
    from divertgui.engine.store import CaptureStore

HEADER_PRESENT = {
    "ip": lambda r: r.version == 4,
    "ipv6": lambda r: r.version == 6,
    "tcp": lambda r: r.col("protocol") == IPPROTO_TCP,
    "udp": lambda r: r.col("protocol") == IPPROTO_UDP,
    "icmp": lambda r: (r.col("protocol") == IPPROTO_ICMP) & (r.version == 4),
    "icmpv6": lambda r: (r.col("protocol") == IPPROTO_ICMPV6) & (r.version == 6),
}


def _flag(name):
    return lambda r: r.col(name).astype(np.int64)


def _header_read(read: FilterRead):
    """A filter field's values, read from its header at the row's fixed offset."""

    def values(r):
        base = 0 if read.header in ("ip", "ipv6") else r.transport
        total = 0
        for field, position in read.pieces:
            total = total | ((r.word(base + field.offset, field.size) >> field.shift) & field.mask) << position
        return total

    return values


# field -> values over all rows (only rows where the field's guard holds are read)
VALUES = {
    "zero": lambda r: np.zeros(r.n, np.int64),
    "event": lambda r: np.zeros(r.n, np.int64),
    "timestamp": lambda r: r.col("timestamp"),
    "outbound": _flag("outbound"),
    "inbound": lambda r: 1 - r.col("outbound").astype(np.int64),
    "loopback": _flag("loopback"),
    "impostor": _flag("impostor"),
    "fragment": lambda r: np.zeros(r.n, np.int64),
    "ifIdx": lambda r: r.col("if_idx"),
    "subIfIdx": lambda r: r.col("sub_if_idx"),
    "length": lambda r: r.length,
    "protocol": lambda r: r.col("protocol"),
    **{name: (lambda present: lambda r: present(r).astype(np.int64))(present)
       for name, present in HEADER_PRESENT.items()},
    **{name: _header_read(read) for name, read in FILTER_READS.items() if read.field is None
       or read.field.kind != "address"},
    "tcp.SrcPort": lambda r: r.col("src_port"),
    "tcp.DstPort": lambda r: r.col("dst_port"),
    "tcp.PayloadLength": lambda r: r.length - r.tcp_payload,
    "udp.SrcPort": lambda r: r.col("src_port"),
    "udp.DstPort": lambda r: r.col("dst_port"),
    "udp.PayloadLength": lambda r: r.length - r.transport - UDP_HEADER_LEN,
    "localPort": lambda r: np.where(r.col("outbound"), _source_port(r), _destination_port(r)),
    "remotePort": lambda r: np.where(r.col("outbound"), _destination_port(r), _source_port(r)),
}

def _ports_apply(r) -> np.ndarray:
    protocol = r.col("protocol")
    return (protocol == IPPROTO_TCP) | (protocol == IPPROTO_UDP)


# As WinDivert has it: ICMP and ICMPv6 carry their type as the source "port" and 0 as the destination.
def _source_port(r) -> np.ndarray:
    return np.where(_ports_apply(r), r.col("src_port"), r.byte(r.transport))


def _destination_port(r) -> np.ndarray:
    return np.where(_ports_apply(r), r.col("dst_port"), 0)


GUARDS = {name: name.split(".")[0] for name in VALUES if "." in name}
INDEXED = {"packet": 1, "packet16": 2, "packet32": 4,
            "tcp.Payload": 1, "tcp.Payload16": 2, "tcp.Payload32": 4,
            "udp.Payload": 1, "udp.Payload16": 2, "udp.Payload32": 4}
ADDRESSES = {name: read.field.offset for name, read in FILTER_READS.items()
             if read.field is not None and read.field.kind == "address"}


class Rows:
    """Columns and packet bytes of rows start..stop, as arrays read once each."""

    def __init__(self, store: "CaptureStore", start: int, stop: int) -> None:
        self.store, self.start, self.n = store, start, stop - start
        self._columns: dict[str, np.ndarray] = {}
        self._segments = None
        edited = [row - start for row in list(store._edits) if start <= row < stop]
        plain = self.col("plain").copy()
        plain[edited] = False     # their arena bytes are the original, not the current packet
        self.plain = plain
        self.version = self.col("ip_version")
        self.length = self.col("length").astype(np.int64)
        self.transport = np.where(self.version == 4, IPV4_HEADER_LEN, IPV6_HEADER_LEN)

    def col(self, name: str) -> np.ndarray:
        values = self._columns.get(name)
        if values is None:
            values = self.store.column(name, self.start, self.start + self.n)
            if values.dtype.kind in "iu" and values.dtype != np.uint64:
                values = values.astype(np.int64)
            self._columns[name] = values
        return values

    @property
    def tcp_payload(self) -> np.ndarray:
        return self.transport + VALUES["tcp.HdrLength"](self) * 4

    def gather(self, at, size: int) -> np.ndarray:
        """Bytes at..at+size of each plain row, one row of the result per row; zeros where out of range."""
        at = np.broadcast_to(np.asarray(at, np.int64), (self.n,))
        valid = self.plain & (at >= 0) & (at + size <= self.length)
        out = np.zeros((self.n, size), np.uint8)
        offsets = self.col("offset")
        for first, last, arena in self._arena_segments():
            rows = np.flatnonzero(valid[first:last])
            if not len(rows):
                continue
            local = (offsets[first:last][rows] & np.uint64(ARENA_BYTES - 1)).astype(np.int64) + at[first:last][rows]
            view = np.frombuffer(self.store._arenas[arena], np.uint8)
            out[first + rows] = view[local[:, None] + np.arange(size)]
        return out

    def byte(self, at) -> np.ndarray:
        return self.gather(at, 1)[:, 0].astype(np.int64)

    def word(self, at, size: int) -> np.ndarray:
        """Big-endian `size`-byte words (size <= 7)."""
        data = self.gather(at, size).astype(np.int64)
        value = data[:, 0]
        for k in range(1, size):
            value = (value << 8) | data[:, k]
        return value

    def words64(self, at) -> tuple[np.ndarray, np.ndarray]:
        """The 16 bytes at `at` as big-endian (high, low) uint64 halves."""
        data = self.gather(at, 16)
        halves = data.view(">u8").astype(np.uint64)
        return halves[:, 0], halves[:, 1]

    def in_range(self, at, size: int, low=0) -> np.ndarray:
        return (at >= low) & (at + size <= self.length)

    def _arena_segments(self):
        """(first, last, arena) runs: rows fill the arenas in order, so each arena is one run."""
        if self._segments is None:
            arenas = (self.col("offset") >> np.uint64(ARENA_BITS)).astype(np.int64)
            cuts = np.flatnonzero(np.diff(arenas)) + 1
            bounds = [0, *cuts.tolist(), self.n]
            self._segments = [(a, b, int(arenas[a])) for a, b in zip(bounds, bounds[1:]) if b > a]
        return self._segments


def address_words(rows: Rows, at) -> tuple[np.ndarray, np.ndarray]:
    """The 128-bit address at byte `at` (IPv4 rows: mapped) as (high, low) uint64."""
    v4 = rows.version == 4
    high, low = rows.words64(np.where(v4, -1, at))       # -1: out of range, read nothing
    mapped = np.uint64(IPV4_MAPPED) | rows.word(np.where(v4, at, -1), 4).astype(np.uint64)
    return np.where(v4, np.uint64(0), high), np.where(v4, mapped, low)
