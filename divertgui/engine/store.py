"""The capture store: packet bytes in large arenas, one fixed-width record per packet.

Rows only ever get appended, and storage already handed out never moves: the
GUI thread may read any row below the count it was told while the session
thread appends more. Records live in chunks of CHUNK_ROWS rows; bytes live in
bytearray arenas of ARENA_BYTES each.
"""

from __future__ import annotations

import enum
import operator
import threading
from typing import Iterable, NamedTuple, Sequence

import numpy as np

from divertgui.engine.address import Address, Layer

CHUNK_BITS = 14
CHUNK_ROWS = 1 << CHUNK_BITS
ARENA_BITS = 20
ARENA_BYTES = 1 << ARENA_BITS


class Verdict(enum.IntEnum):
    PASSED = 0
    MODIFIED = 1
    DROPPED = 2
    HELD = 3
    INJECTED = 4
    SNIFFED = 5


class Flags(enum.IntFlag):
    """Bits of the `flags` column."""

    OUTBOUND = 0x001
    LOOPBACK = 0x002
    IMPOSTOR = 0x004
    IPV6 = 0x008
    SNIFFED = 0x010
    IP_CHECKSUM = 0x020
    TCP_CHECKSUM = 0x040
    UDP_CHECKSUM = 0x080
    FORWARD_LAYER = 0x100
    # A well-formed packet every parser reads alike: no IP options or
    # extension headers, no fragment, exact lengths, a complete TCP, UDP,
    # ICMP or ICMPv6 header. Display filters may decide these rows from the
    # columns alone.
    PLAIN = 0x200


RECORD = np.dtype([
    ("wall_ns", "<i8"),
    ("timestamp", "<i8"),
    ("offset", "<u8"),
    ("length", "<u4"),
    ("if_idx", "<u4"),
    ("sub_if_idx", "<u4"),
    ("conversation", "<u4"),
    ("src_port", "<u2"),
    ("dst_port", "<u2"),
    ("flags", "<u2"),
    ("ip_version", "u1"),
    ("protocol", "u1"),
    ("verdict", "u1"),
])

_FLAG_COLUMNS = {
    "outbound": Flags.OUTBOUND,
    "loopback": Flags.LOOPBACK,
    "impostor": Flags.IMPOSTOR,
    "ipv6": Flags.IPV6,
    "sniffed": Flags.SNIFFED,
    "plain": Flags.PLAIN,
}

COLUMNS = tuple(RECORD.names) + tuple(_FLAG_COLUMNS)


class Summary(NamedTuple):
    """What the columns record about a packet's headers."""

    ip_version: int      # 0 when not IPv4/IPv6
    protocol: int        # transport protocol number (after IPv6 extension headers)
    src_port: int        # 0 unless TCP/UDP with a readable header
    dst_port: int
    conversation: int    # the same for both directions of a flow
    plain: bool


_NOTHING = Summary(0, 0, 0, 0, 0, False)
_IPV6_EXTENSIONS = frozenset({0, 43, 60, 51, 44, 135, 139, 140, 253, 254})
_IPV6_EXTENSION_LIST = sorted(_IPV6_EXTENSIONS)


def summarise(raw: bytes) -> Summary:
    n = len(raw)
    if n < 20:
        return _NOTHING
    version = raw[0] >> 4
    if version == 4:
        ihl = (raw[0] & 15) * 4
        if ihl < 20 or ihl > n:
            return _NOTHING
        protocol = raw[9]
        fragment = (raw[6] & 0x3F) or raw[7]
        plain = ihl == 20 and ((raw[2] << 8) | raw[3]) == n and not fragment
        src, dst = raw[12:16], raw[16:20]
        at = ihl
    elif version == 6:
        if n < 40:
            return _NOTHING
        protocol = raw[6]
        plain = ((raw[4] << 8) | raw[5]) + 40 == n and protocol not in _IPV6_EXTENSIONS
        src, dst = raw[8:24], raw[24:40]
        at = 40
        fragment = False
        while protocol in _IPV6_EXTENSIONS and protocol != 44 and at + 8 <= n:
            size = (raw[at + 1] + 2) * 4 if protocol == 51 else (raw[at + 1] + 1) * 8
            protocol = raw[at]
            at += size
        if protocol == 44 and at + 8 <= n:
            fragment = True
            protocol = raw[at]
            at += 8
    else:
        return _NOTHING
    sport = dport = 0
    if protocol in (6, 17) and not fragment and at + 4 <= n:
        sport = (raw[at] << 8) | raw[at + 1]
        dport = (raw[at + 2] << 8) | raw[at + 3]
    if plain:
        if protocol == 6:
            plain = at + 20 <= n and 20 <= (raw[at + 12] >> 4) * 4 <= n - at
        elif protocol == 17:
            plain = at + 8 <= n and ((raw[at + 4] << 8) | raw[at + 5]) == n - at
        elif protocol == (1 if version == 4 else 58):
            plain = at + 8 <= n
        else:
            plain = False
    conversation = _conversation(_endpoint(src, sport), _endpoint(dst, dport), version << 8 | protocol)
    return Summary(version, protocol, sport, dport, conversation, bool(plain))


# A conversation id mixes both endpoints in an order-free way, in 64-bit
# arithmetic that numpy does for a whole batch as Python does for one packet.
_MASK64 = (1 << 64) - 1
_MIX = 0x9E3779B97F4A7C15
_MIX_PAIR = 0xC2B2AE3D27D4EB4F


def _endpoint(address: bytes, port: int) -> int:
    value = 0
    for at in range(0, len(address), 4):
        value = (value * _MIX + int.from_bytes(address[at:at + 4], "big")) & _MASK64
    return (value * _MIX + port) & _MASK64


def _conversation(a: int, b: int, kind: int) -> int:
    low, high = (a, b) if a <= b else (b, a)
    value = (kind * _MIX_PAIR + low) & _MASK64
    value = (value * _MIX_PAIR + high) & _MASK64
    return ((value * _MIX_PAIR) & _MASK64) >> 32


_OUTBOUND, _LOOPBACK, _IMPOSTOR, _IPV6, _SNIFFED, _IP_CK, _TCP_CK, _UDP_CK, _FORWARD, _PLAIN = (
    int(f) for f in (Flags.OUTBOUND, Flags.LOOPBACK, Flags.IMPOSTOR, Flags.IPV6, Flags.SNIFFED, Flags.IP_CHECKSUM,
                     Flags.TCP_CHECKSUM, Flags.UDP_CHECKSUM, Flags.FORWARD_LAYER, Flags.PLAIN))


_ADDRESS_FIELDS = operator.attrgetter("timestamp", "if_idx", "sub_if_idx", "outbound", "loopback", "impostor",
                                       "ipv6", "sniffed", "ip_checksum", "tcp_checksum", "udp_checksum", "layer")
_ADDRESS_BITS = np.array([_OUTBOUND, _LOOPBACK, _IMPOSTOR, _IPV6, _SNIFFED, _IP_CK, _TCP_CK, _UDP_CK], np.int64)


def _address_columns(addresses: Sequence[Address], block: np.ndarray) -> None:
    """timestamp, if_idx, sub_if_idx and the address bits of `flags`, for a batch."""
    if not len(block):
        return
    values = np.array(list(map(_ADDRESS_FIELDS, addresses)), np.int64)
    block["timestamp"] = values[:, 0]
    block["if_idx"] = values[:, 1]
    block["sub_if_idx"] = values[:, 2]
    flags = (values[:, 3:11] != 0) @ _ADDRESS_BITS
    flags |= np.where(values[:, 11] == int(Layer.NETWORK_FORWARD), _FORWARD, 0)
    block["flags"] = flags


# Below this many packets a batch is summarised packet by packet: numpy's
# cost per call outweighs its cost per packet.
VECTOR_ROWS = 96


def _summaries_one_by_one(raws: Sequence[bytes], block: np.ndarray) -> None:
    summaries = [summarise(raw) for raw in raws]
    if not summaries:
        return
    columns = np.array(summaries, np.int64)
    block["ip_version"] = columns[:, 0]
    block["protocol"] = columns[:, 1]
    block["src_port"] = columns[:, 2]
    block["dst_port"] = columns[:, 3]
    block["conversation"] = columns[:, 4]
    block["flags"] |= np.where(columns[:, 5] != 0, _PLAIN, 0).astype(np.uint16)


# Bytes of a packet's start read for its summary: an IPv6 header and a TCP header's data offset.
_HEAD_BYTES = 56


def _summary_columns(raws: Sequence[bytes], blob: bytes, lengths: np.ndarray, block: np.ndarray) -> None:
    """ip_version, protocol, ports, conversation and the PLAIN bit, as summarise() gives them.

    IPv4 without options and IPv6 without extension headers are read with
    numpy for the whole batch; any other packet goes through summarise().
    """
    count = len(lengths)
    if not count:
        return
    data = np.frombuffer(blob, np.uint8)
    starts = np.cumsum(lengths) - lengths
    positions = np.minimum(starts[:, None] + np.arange(_HEAD_BYTES), max(len(data) - 1, 0))
    head = data[positions].astype(np.int64) if len(data) else np.zeros((count, _HEAD_BYTES), np.int64)
    # Bytes beyond a packet's end belong to the next one: every read below is guarded by a length test.
    head[np.arange(_HEAD_BYTES) >= lengths[:, None]] = 0
    n = lengths
    version = head[:, 0] >> 4
    v4 = (version == 4) & (n >= 20) & ((head[:, 0] & 15) == 5)
    v6 = (version == 6) & (n >= 40)
    protocol = np.where(v4, head[:, 9], head[:, 6])
    v6 &= ~np.isin(protocol, _IPV6_EXTENSION_LIST)
    simple = v4 | v6
    at = np.where(v4, 20, 40)
    fragment = v4 & (((head[:, 6] & 0x3F) | head[:, 7]) != 0)
    plain = np.where(v4, ((head[:, 2] << 8) | head[:, 3]) == n, ((head[:, 4] << 8) | head[:, 5]) + 40 == n)
    plain &= ~fragment

    def byte(offset):
        return np.where(v4, head[:, 20 + offset], head[:, 40 + offset])

    ported = ((protocol == 6) | (protocol == 17)) & ~fragment & (at + 4 <= n)
    sport = np.where(ported, (byte(0) << 8) | byte(1), 0)
    dport = np.where(ported, (byte(2) << 8) | byte(3), 0)
    data_offset = (byte(12) >> 4) * 4
    tcp_plain = (at + 20 <= n) & (20 <= data_offset) & (data_offset <= n - at)
    udp_plain = (at + 8 <= n) & (((byte(4) << 8) | byte(5)) == n - at)
    icmp = np.where(v4, protocol == 1, protocol == 58)
    plain &= np.where(protocol == 6, tcp_plain, np.where(protocol == 17, udp_plain, icmp & (at + 8 <= n)))

    words = head.astype(np.uint64)
    mix = np.uint64(_MIX)

    def address_word(at):
        return words[:, at] << np.uint64(24) | words[:, at + 1] << np.uint64(16) \
            | words[:, at + 2] << np.uint64(8) | words[:, at + 3]

    def endpoint(v4_at, v6_at, port):
        v6_value = np.zeros(count, np.uint64)
        for word in range(4):
            v6_value = v6_value * mix + address_word(v6_at + 4 * word)
        return np.where(v4, address_word(v4_at), v6_value) * mix + port.astype(np.uint64)

    a, b = endpoint(12, 8, sport), endpoint(16, 24, dport)
    low, high = np.minimum(a, b), np.maximum(a, b)
    pair = np.uint64(_MIX_PAIR)
    kind = (version << 8 | protocol).astype(np.uint64)
    conversation = ((kind * pair + low) * pair + high) * pair >> np.uint64(32)

    block["ip_version"] = np.where(simple, version, 0)
    block["protocol"] = np.where(simple, protocol, 0)
    block["src_port"] = sport
    block["dst_port"] = dport
    block["conversation"] = np.where(simple, conversation, 0)
    block["flags"] |= np.where(simple & plain, _PLAIN, 0).astype(np.uint16)
    for i in np.flatnonzero(~simple).tolist():
        s = summarise(raws[i])
        record = block[i]
        record["ip_version"], record["protocol"] = s.ip_version, s.protocol
        record["src_port"], record["dst_port"], record["conversation"] = s.src_port, s.dst_port, s.conversation
        if s.plain:
            record["flags"] |= _PLAIN


class CaptureStore:
    """Append-only packets with their addresses, verdicts and capture times.

    `wall_ns` is the wall-clock capture time (time.time_ns()); `timestamp`
    is the address's monotonic nanoseconds.
    """

    def __init__(self) -> None:
        self._append_lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._records: list[np.ndarray] = []
        self._arenas: list[bytearray] = []
        self._arena_used = ARENA_BYTES
        self._edits: dict[int, tuple[bytes, int]] = {}   # row -> (current bytes, original length)
        self.edit_log: list[int] = []                     # rows in the order they were edited
        self._count = 0
        self.bytes_stored = 0
        self.generation = getattr(self, "generation", -1) + 1

    def __len__(self) -> int:
        return self._count

    # -- writing (one thread) ------------------------------------------------

    def append(self, raw: bytes, address: Address, verdict: Verdict, wall_ns: int) -> int:
        return self.append_batch((raw,), (address,), verdict, wall_ns).start

    def append_batch(self, raws: Sequence[bytes], addresses: Sequence[Address],
                     verdicts: Sequence[int] | int, wall_ns: Sequence[int] | int) -> range:
        """Append packets; `verdicts` and `wall_ns` are one value for all or one per packet."""
        count = len(raws)
        if len(addresses) != count:
            raise ValueError(f"append_batch: {count} packets but {len(addresses)} addresses")
        lengths = np.fromiter(map(len, raws), np.int64, count)
        largest = int(lengths.max()) if count else 0
        if largest > ARENA_BYTES:
            raise ValueError(f"packet of {largest} bytes is larger than a store arena ({ARENA_BYTES} bytes)")
        block = np.empty(count, RECORD)
        block["wall_ns"] = wall_ns
        block["verdict"] = verdicts
        block["length"] = lengths
        _address_columns(addresses, block)
        blob = b"".join(raws)
        if count >= VECTOR_ROWS:
            _summary_columns(raws, blob, lengths, block)
        else:
            _summaries_one_by_one(raws, block)
        with self._append_lock:
            first = self._count
            block["offset"] = self._put_batch(blob, lengths)
            row, done = first, 0
            while done < count:
                chunk = self._record_chunk(row)
                at = row & (CHUNK_ROWS - 1)
                take = min(CHUNK_ROWS - at, count - done)
                chunk[at:at + take] = block[done:done + take]
                row += take
                done += take
            # Publishing the count last: readers never see a half-written row.
            self._count = row
        return range(first, row)

    def _put_batch(self, blob: bytes, lengths: np.ndarray) -> np.ndarray:
        """Copy the packets joined in `blob` into the arenas; their offsets. No packet spans two arenas."""
        ends = np.cumsum(lengths)
        starts = ends - lengths
        offsets = np.empty(len(lengths), np.uint64)
        done = 0
        while done < len(lengths):
            if not self._arenas or self._arena_used + int(lengths[done]) > ARENA_BYTES:
                self._arenas.append(bytearray(ARENA_BYTES))
                self._arena_used = 0
            base = int(starts[done])
            room = ARENA_BYTES - self._arena_used
            fits = int(np.searchsorted(ends, base + room, side="right"))
            stop = int(ends[fits - 1])
            at = self._arena_used
            arena_index = len(self._arenas) - 1
            self._arenas[arena_index][at:at + stop - base] = blob[base:stop]
            arena_offsets = (starts[done:fits] - base + at).astype(np.uint64)
            offsets[done:fits] = arena_offsets | np.uint64(arena_index << ARENA_BITS)
            self._arena_used = at + stop - base
            done = fits
        self.bytes_stored += len(blob)
        return offsets

    def _record_chunk(self, row: int) -> np.ndarray:
        index = row >> CHUNK_BITS
        if index == len(self._records):
            self._records.append(np.zeros(CHUNK_ROWS, RECORD))
        return self._records[index]

    def set_verdict(self, row: int, verdict: Verdict) -> None:
        self._record(row)["verdict"] = verdict

    def set_edited(self, row: int, raw: bytes) -> None:
        """Record the bytes that were actually sent; the captured ones stay readable as `original`."""
        record = self._record(row)
        original_length = self._edits[row][1] if row in self._edits else int(record["length"])
        self._edits[row] = (bytes(raw), original_length)
        self.edit_log.append(row)
        s = summarise(raw)
        flags = int(record["flags"]) & ~Flags.PLAIN
        if s.plain:
            flags |= Flags.PLAIN
        record["length"] = len(raw)
        record["ip_version"] = s.ip_version
        record["protocol"] = s.protocol
        record["src_port"] = s.src_port
        record["dst_port"] = s.dst_port
        record["conversation"] = s.conversation
        record["flags"] = flags
        record["verdict"] = Verdict.MODIFIED

    def clear(self) -> None:
        with self._append_lock:
            self._count = 0
            self._reset()

    # -- reading (any thread, rows below the published count) ---------------

    def _record(self, row: int) -> np.ndarray:
        if not 0 <= row < self._count:
            raise IndexError(f"row {row} is not in the store (it has {self._count} rows)")
        return self._records[row >> CHUNK_BITS][row & (CHUNK_ROWS - 1)]

    def _stored_bytes(self, record, length: int) -> bytes:
        offset = int(record["offset"])
        at = offset & (ARENA_BYTES - 1)
        return bytes(self._arenas[offset >> ARENA_BITS][at:at + length])

    def raw(self, row: int) -> bytes:
        edit = self._edits.get(row)
        if edit is not None:
            return edit[0]
        record = self._record(row)
        return self._stored_bytes(record, int(record["length"]))

    def original(self, row: int) -> bytes | None:
        """The captured bytes of an edited row; None when the row was not edited."""
        edit = self._edits.get(row)
        if edit is None:
            return None
        return self._stored_bytes(self._record(row), edit[1])

    def is_edited(self, row: int) -> bool:
        return row in self._edits

    def address(self, row: int) -> Address:
        r = self._record(row)
        flags = int(r["flags"])
        return Address(
            outbound=bool(flags & Flags.OUTBOUND), loopback=bool(flags & Flags.LOOPBACK),
            impostor=bool(flags & Flags.IMPOSTOR), ipv6=bool(flags & Flags.IPV6),
            if_idx=int(r["if_idx"]), sub_if_idx=int(r["sub_if_idx"]), timestamp=int(r["timestamp"]),
            sniffed=bool(flags & Flags.SNIFFED),
            layer=Layer.NETWORK_FORWARD if flags & Flags.FORWARD_LAYER else Layer.NETWORK,
            ip_checksum=bool(flags & Flags.IP_CHECKSUM), tcp_checksum=bool(flags & Flags.TCP_CHECKSUM),
            udp_checksum=bool(flags & Flags.UDP_CHECKSUM),
        )

    def value(self, name: str, row: int) -> int:
        """One cell of a RECORD column, without copying a column."""
        return int(self._record(row)[name])

    def verdict(self, row: int) -> Verdict:
        return Verdict(int(self._record(row)["verdict"]))

    def column(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """A copy of one column for rows start..stop (default: every published row).

        Names: the fields of RECORD, plus the booleans outbound, loopback,
        impostor, ipv6, sniffed and plain taken from `flags`.
        """
        count = self._count
        stop = count if stop is None else min(stop, count)
        start = max(0, min(start, stop))
        flag = _FLAG_COLUMNS.get(name)
        field = "flags" if flag is not None else name
        if field not in RECORD.names:
            raise KeyError(f"no store column {name!r}; columns are {', '.join(COLUMNS)}")
        parts = []
        row = start
        while row < stop:
            index, at = row >> CHUNK_BITS, row & (CHUNK_ROWS - 1)
            take = min(CHUNK_ROWS - at, stop - row)
            parts.append(self._records[index][field][at:at + take])
            row += take
        values = np.concatenate(parts) if parts else np.zeros(0, RECORD[field])
        if flag is not None:
            return (values & int(flag)) != 0
        return values

    def rows_of(self, rows: Iterable[int]) -> list[bytes]:
        return [self.raw(row) for row in rows]

    def overhead_bytes(self) -> int:
        """Memory held beyond the packet bytes themselves: records, arena slack, edits."""
        records = len(self._records) * CHUNK_ROWS * RECORD.itemsize
        arenas = len(self._arenas) * ARENA_BYTES - self.bytes_stored
        edits = sum(len(raw) + 64 for raw, _ in self._edits.values())
        return records + arenas + edits


# -- display filters ------------------------------------------------------------------
#
# A display filter is decided from the columns and the arena bytes, whole
# arrays at a time, for PLAIN rows: their header offsets are fixed (IPv4 20
# bytes, IPv6 40, then the transport header), so any field is a gather at a
# known offset. Other rows, edited rows and tests with no vectorised form
# (random*, ports of non-TCP/UDP packets) go through the compiled filter.

_HEADER_PRESENT = {
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
_VALUES = {
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
       for name, present in _HEADER_PRESENT.items()},
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
    _VALUES[f"icmpv6.{_name}"] = _VALUES[f"icmp.{_name}"]

def _ports_apply(r) -> np.ndarray:
    protocol = r.col("protocol")
    return (protocol == 6) | (protocol == 17)


# As WinDivert has it: ICMP and ICMPv6 carry their type as the source "port" and 0 as the destination.
def _source_port(r) -> np.ndarray:
    return np.where(_ports_apply(r), r.col("src_port"), r.byte(r.transport))


def _destination_port(r) -> np.ndarray:
    return np.where(_ports_apply(r), r.col("dst_port"), 0)


_GUARDS = {name: name.split(".")[0] for name in _VALUES if "." in name}
_INDEXED = {"packet": 1, "packet16": 2, "packet32": 4,
            "tcp.Payload": 1, "tcp.Payload16": 2, "tcp.Payload32": 4,
            "udp.Payload": 1, "udp.Payload16": 2, "udp.Payload32": 4}
_ADDRESSES = {"ip.SrcAddr": 12, "ip.DstAddr": 16, "ipv6.SrcAddr": 8, "ipv6.DstAddr": 24}
_MAPPED = 0xFFFF00000000


class _Rows:
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


def _compare(values: np.ndarray, op: str, value: int) -> np.ndarray | None:
    if not -(1 << 63) <= value < (1 << 63):
        return None
    return {"==": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal,
            ">": np.greater, ">=": np.greater_equal}[op](values, value)


def _compare_128(high: np.ndarray, low: np.ndarray, op: str, value: int) -> np.ndarray:
    """Compare (high << 64 | low) with a 128-bit value; high/low are uint64."""
    vh, vl = np.uint64(value >> 64), np.uint64(value & ((1 << 64) - 1))
    less = (high < vh) | ((high == vh) & (low < vl))
    equal = (high == vh) & (low == vl)
    return {"==": equal, "!=": ~equal, "<": less, "<=": less | equal,
            ">": ~(less | equal), ">=": ~less}[op]


def _address(rows: _Rows, at) -> tuple[np.ndarray, np.ndarray]:
    """The 128-bit address at byte `at` (IPv4 rows: mapped) as (high, low) uint64."""
    v4 = rows.version == 4
    high, low = rows.words64(np.where(v4, -1, at))       # -1: out of range, read nothing
    mapped = np.uint64(_MAPPED) | rows.word(np.where(v4, at, -1), 4).astype(np.uint64)
    return np.where(v4, np.uint64(0), high), np.where(v4, mapped, low)


def _test(test, rows: _Rows) -> np.ndarray | None:
    """The plain rows a Test accepts, or None when it has no vectorised form."""
    name, op, value = test.field, test.op, test.value
    if name in _ADDRESSES:
        guard = _HEADER_PRESENT[name.split(".")[0]](rows)
        high, low = _address(rows, _ADDRESSES[name])
        return guard & _compare_128(high, low, op, value)
    if name in ("localAddr", "remoteAddr"):
        outbound = rows.col("outbound")
        local = outbound if name == "localAddr" else ~outbound
        src, dst = np.where(rows.version == 4, 12, 8), np.where(rows.version == 4, 16, 24)
        high, low = _address(rows, np.where(local, src, dst))
        return _compare_128(high, low, op, value)
    if name in _INDEXED:
        size = _INDEXED[name]
        guard = np.ones(rows.n, bool) if name.startswith("packet") else _HEADER_PRESENT[name.split(".")[0]](rows)
        base = (np.zeros(rows.n, np.int64) if name.startswith("packet")
                else rows.tcp_payload if name.startswith("tcp") else rows.transport + 8)
        at = base + test.index if test.index >= 0 else rows.length + test.index
        present = guard & rows.in_range(at, size, base)
        result = _compare(rows.word(at, size), op, value)
        return None if result is None else present & result
    values_of = _VALUES.get(name)
    if values_of is None:
        return None
    result = _compare(values_of(rows), op, value)
    if result is None:
        return None
    guard = _GUARDS.get(name)
    return result & _HEADER_PRESENT[guard](rows) if guard else result


def _decide(node, rows: _Rows) -> tuple[np.ndarray, bool]:
    """(a superset of the plain rows `node` accepts, whether it is exactly those rows)."""
    from divertgui.engine.filter.ast import And, Const, Cond, Or, Test
    if isinstance(node, Const):
        return np.full(rows.n, bool(node.value)), True
    if isinstance(node, Test):
        accepted = _test(node, rows)
        return (np.ones(rows.n, bool), False) if accepted is None else (accepted, True)
    if isinstance(node, (And, Or)):
        left, left_exact = _decide(node.left, rows)
        right, right_exact = _decide(node.right, rows)
        return (left & right if isinstance(node, And) else left | right), left_exact and right_exact
    if isinstance(node, Cond):
        test, test_exact = _decide(node.test, rows)
        then, then_exact = _decide(node.then, rows)
        otherwise, otherwise_exact = _decide(node.otherwise, rows)
        if test_exact:
            return (test & then) | (~test & otherwise), then_exact and otherwise_exact
        return then | otherwise, False
    return np.ones(rows.n, bool), False


class DisplayIndex:
    """The rows of a store that match a display filter, kept up to date by update().

    `filter` is filter text ("" shows every row, even unparsable ones),
    compiled with compile_filter at `layer`, or an already compiled Filter
    (anything with match(raw, address); its syntax `tree`, when it has one,
    lets whole columns be decided at once). Rows decided from the columns
    and arena bytes never reach match().
    """

    def __init__(self, store: CaptureStore, filter, layer: Layer = Layer.NETWORK) -> None:
        self.store = store
        if isinstance(filter, str):
            self.text = filter.strip()
            if self.text:
                from divertgui.engine.filter import compile_filter
                filter = compile_filter(self.text, layer)
        else:
            self.text = getattr(filter, "text", "")
        self._match = filter.match if self.text or not isinstance(filter, str) else None
        self._tree = getattr(filter, "tree", None) if self._match is not None else None
        self._generation = store.generation
        self._done = 0
        self._edits_seen = 0
        self._parts: list[np.ndarray] = []
        self._rows: np.ndarray | None = np.zeros(0, np.int64)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def rows(self) -> np.ndarray:
        if self._rows is None:
            self._rows = np.concatenate(self._parts) if self._parts else np.zeros(0, np.int64)
            self._parts = [self._rows]
        return self._rows

    def update(self) -> int:
        """Index the rows appended since the last update; returns how many of them match.

        `rows` only grows here; edits of rows already indexed wait for recheck_edits().
        """
        store = self.store
        if store.generation != self._generation:
            self._generation = store.generation
            self._done, self._parts, self._rows, self._count = 0, [], np.zeros(0, np.int64), 0
            self._edits_seen = 0
        start, stop = self._done, len(store)
        if stop <= start:
            return 0
        if self._match is None:
            found = np.arange(start, stop, dtype=np.int64)
        else:
            found = self._scan(start, stop)
        self._done = stop
        if len(found):
            self._parts.append(found)
            self._rows = None
            self._count += len(found)
        return len(found)

    def recheck_edits(self) -> bool:
        """Decide again the indexed rows edited since the last recheck; True when `rows` changed."""
        log = self.store.edit_log
        if self._edits_seen >= len(log) or self._match is None:
            self._edits_seen = len(log)
            return False
        rows = {row for row in log[self._edits_seen:] if row < self._done}
        self._edits_seen = len(log)
        if not rows:
            return False
        store = self.store
        now_in = np.array(sorted(r for r in rows if self._match(store.raw(r), store.address(r))), np.int64)
        now_out = np.array(sorted(rows), np.int64)
        updated = np.union1d(np.setdiff1d(self.rows, now_out), now_in)
        changed = not np.array_equal(updated, self.rows)
        self._parts, self._rows, self._count = [updated], updated, len(updated)
        return changed

    def _scan(self, start: int, stop: int) -> np.ndarray:
        rows = _Rows(self.store, start, stop)
        if self._tree is not None:
            candidates, exact = _decide(self._tree, rows)
        else:
            candidates, exact = np.ones(rows.n, bool), False
        # The arrays speak for plain rows only; every other row is a candidate.
        candidates |= ~rows.plain
        decided = rows.plain if exact else np.zeros(rows.n, bool)
        accepted = candidates & decided
        undecided = np.flatnonzero(candidates & ~decided)
        if len(undecided):
            store, match = self.store, self._match
            hits = [i for i in undecided.tolist() if match(store.raw(start + i), store.address(start + i))]
            accepted[hits] = True
        return np.flatnonzero(accepted).astype(np.int64) + start
