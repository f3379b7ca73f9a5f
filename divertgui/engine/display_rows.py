"""The rows of a store as arrays, for display filters: each filter field's
values over PLAIN rows, read from the columns and the arena bytes.

PLAIN rows have fixed header offsets (IPv4 20 bytes, IPv6 40, then the
transport header), so any field is a gather at a known offset.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from divertgui.engine.store_record import ARENA_BITS, ARENA_BYTES

if TYPE_CHECKING:
    from divertgui.engine.store import CaptureStore

HEADER_PRESENT = {
    "ip": lambda r: r.version == 4,
    "ipv6": lambda r: r.version == 6,
    "tcp": lambda r: r.col("protocol") == 6,
    "udp": lambda r: r.col("protocol") == 17,
    "icmp": lambda r: (r.col("protocol") == 1) & (r.version == 4),
    "icmpv6": lambda r: (r.col("protocol") == 58) & (r.version == 6),
}


def _flag(name):
    return lambda r: r.col(name).astype(np.int64)


def _tcp_flag(bit):
    return lambda r: (r.byte(r.transport + 13) >> bit) & 1


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
    "ip.HdrLength": lambda r: r.byte(0) & 0xF,
    "ip.TOS": lambda r: r.byte(1),
    "ip.Length": lambda r: r.word(2, 2),
    "ip.Id": lambda r: r.word(4, 2),
    "ip.DF": lambda r: (r.byte(6) >> 6) & 1,
    "ip.MF": lambda r: (r.byte(6) >> 5) & 1,
    "ip.FragOff": lambda r: r.word(6, 2) & 0x1FFF,
    "ip.TTL": lambda r: r.byte(8),
    "ip.Protocol": lambda r: r.byte(9),
    "ip.Checksum": lambda r: r.word(10, 2),
    "ipv6.TrafficClass": lambda r: ((r.byte(0) & 0xF) << 4) | (r.byte(1) >> 4),
    "ipv6.FlowLabel": lambda r: r.word(1, 3) & 0xFFFFF,
    "ipv6.Length": lambda r: r.word(4, 2),
    "ipv6.NextHdr": lambda r: r.byte(6),
    "ipv6.HopLimit": lambda r: r.byte(7),
    "icmp.Type": lambda r: r.byte(r.transport),
    "icmp.Code": lambda r: r.byte(r.transport + 1),
    "icmp.Checksum": lambda r: r.word(r.transport + 2, 2),
    "icmp.Body": lambda r: r.word(r.transport + 4, 4),
    "tcp.SrcPort": lambda r: r.col("src_port"),
    "tcp.DstPort": lambda r: r.col("dst_port"),
    "tcp.SeqNum": lambda r: r.word(r.transport + 4, 4),
    "tcp.AckNum": lambda r: r.word(r.transport + 8, 4),
    "tcp.HdrLength": lambda r: r.byte(r.transport + 12) >> 4,
    "tcp.Urg": _tcp_flag(5), "tcp.Ack": _tcp_flag(4), "tcp.Psh": _tcp_flag(3),
    "tcp.Rst": _tcp_flag(2), "tcp.Syn": _tcp_flag(1), "tcp.Fin": _tcp_flag(0),
    "tcp.Window": lambda r: r.word(r.transport + 14, 2),
    "tcp.Checksum": lambda r: r.word(r.transport + 16, 2),
    "tcp.UrgPtr": lambda r: r.word(r.transport + 18, 2),
    "tcp.PayloadLength": lambda r: r.length - r.tcp_payload,
    "udp.SrcPort": lambda r: r.col("src_port"),
    "udp.DstPort": lambda r: r.col("dst_port"),
    "udp.Length": lambda r: r.word(r.transport + 4, 2),
    "udp.Checksum": lambda r: r.word(r.transport + 6, 2),
    "udp.PayloadLength": lambda r: r.length - r.transport - 8,
    "localPort": lambda r: np.where(r.col("outbound"), _source_port(r), _destination_port(r)),
    "remotePort": lambda r: np.where(r.col("outbound"), _destination_port(r), _source_port(r)),
}
for _name in ("Type", "Code", "Checksum", "Body"):
    VALUES[f"icmpv6.{_name}"] = VALUES[f"icmp.{_name}"]

def _ports_apply(r) -> np.ndarray:
    protocol = r.col("protocol")
    return (protocol == 6) | (protocol == 17)


# As WinDivert has it: ICMP and ICMPv6 carry their type as the source "port" and 0 as the destination.
def _source_port(r) -> np.ndarray:
    return np.where(_ports_apply(r), r.col("src_port"), r.byte(r.transport))


def _destination_port(r) -> np.ndarray:
    return np.where(_ports_apply(r), r.col("dst_port"), 0)


GUARDS = {name: name.split(".")[0] for name in VALUES if "." in name}
INDEXED = {"packet": 1, "packet16": 2, "packet32": 4,
            "tcp.Payload": 1, "tcp.Payload16": 2, "tcp.Payload32": 4,
            "udp.Payload": 1, "udp.Payload16": 2, "udp.Payload32": 4}
ADDRESSES = {"ip.SrcAddr": 12, "ip.DstAddr": 16, "ipv6.SrcAddr": 8, "ipv6.DstAddr": 24}
_MAPPED = 0xFFFF00000000


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
        self.transport = np.where(self.version == 4, 20, 40)

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
        return self.transport + (self.byte(self.transport + 12) >> 4) * 4

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
    mapped = np.uint64(_MAPPED) | rows.word(np.where(v4, at, -1), 4).astype(np.uint64)
    return np.where(v4, np.uint64(0), high), np.where(v4, mapped, low)
