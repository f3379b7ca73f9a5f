"""The capture store: packet bytes in large arenas, one fixed-width record per packet.

Rows only ever get appended, and storage already handed out never moves: the
GUI thread may read any row below the count it was told while the session
thread appends more. Records live in chunks of CHUNK_ROWS rows; bytes live in
bytearray arenas of ARENA_BYTES each.
"""

from __future__ import annotations

import enum
import re
import threading
import zlib
from typing import Iterable, NamedTuple, Sequence

import numpy as np

from divertgui.engine.address import Address, Layer

CHUNK_ROWS = 1 << 16
ARENA_BITS = 22
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
    a = src + sport.to_bytes(2, "big")
    b = dst + dport.to_bytes(2, "big")
    conversation = zlib.crc32(a + b if a <= b else b + a, protocol)
    return Summary(version, protocol, sport, dport, conversation, bool(plain))


_OUTBOUND, _LOOPBACK, _IMPOSTOR, _IPV6, _SNIFFED, _IP_CK, _TCP_CK, _UDP_CK, _FORWARD, _PLAIN = (
    int(f) for f in (Flags.OUTBOUND, Flags.LOOPBACK, Flags.IMPOSTOR, Flags.IPV6, Flags.SNIFFED, Flags.IP_CHECKSUM,
                     Flags.TCP_CHECKSUM, Flags.UDP_CHECKSUM, Flags.FORWARD_LAYER, Flags.PLAIN))


def _address_flags(a: Address) -> int:
    return ((_OUTBOUND if a.outbound else 0) | (_LOOPBACK if a.loopback else 0)
            | (_IMPOSTOR if a.impostor else 0) | (_IPV6 if a.ipv6 else 0) | (_SNIFFED if a.sniffed else 0)
            | (_IP_CK if a.ip_checksum else 0) | (_TCP_CK if a.tcp_checksum else 0)
            | (_UDP_CK if a.udp_checksum else 0) | (_FORWARD if a.layer == Layer.NETWORK_FORWARD else 0))


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
        with self._append_lock:
            first = self._count
            row = first
            for i in range(count):
                raw = raws[i]
                address = addresses[i]
                records = self._record_chunk(row)
                s = summarise(raw)
                flags = _address_flags(address)
                if s.plain:
                    flags |= _PLAIN
                records[row & (CHUNK_ROWS - 1)] = (
                    wall_ns if isinstance(wall_ns, int) else wall_ns[i],
                    address.timestamp, self._put(raw), len(raw),
                    address.if_idx, address.sub_if_idx, s.conversation,
                    s.src_port, s.dst_port, flags, s.ip_version, s.protocol,
                    verdicts if isinstance(verdicts, int) else verdicts[i],
                )
                row += 1
            # Publishing the count last: readers never see a half-written row.
            self._count = row
        return range(first, row)

    def _record_chunk(self, row: int) -> np.ndarray:
        index = row >> 16
        if index == len(self._records):
            self._records.append(np.zeros(CHUNK_ROWS, RECORD))
        return self._records[index]

    def _put(self, raw: bytes) -> int:
        size = len(raw)
        if size > ARENA_BYTES:
            raise ValueError(f"packet of {size} bytes is larger than a store arena ({ARENA_BYTES} bytes)")
        if not self._arenas or self._arena_used + size > ARENA_BYTES:
            self._arenas.append(bytearray(ARENA_BYTES))
            self._arena_used = 0
        arena_index = len(self._arenas) - 1
        at = self._arena_used
        self._arenas[arena_index][at:at + size] = raw
        self._arena_used = at + size
        self.bytes_stored += size
        return (arena_index << ARENA_BITS) | at

    def set_verdict(self, row: int, verdict: Verdict) -> None:
        self._record(row)["verdict"] = verdict

    def set_edited(self, row: int, raw: bytes) -> None:
        """Record the bytes that were actually sent; the captured ones stay readable as `original`."""
        record = self._record(row)
        original_length = self._edits[row][1] if row in self._edits else int(record["length"])
        self._edits[row] = (bytes(raw), original_length)
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
        return self._records[row >> 16][row & (CHUNK_ROWS - 1)]

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
            index, at = row >> 16, row & (CHUNK_ROWS - 1)
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


# -- display filters ------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(==|!=|<=|>=|=|<|>)|(&&|\|\||!)|([A-Za-z_][A-Za-z0-9_.]*)|(-?(?:0[xX][0-9a-fA-F]+|[0-9]+))|(\S))")
_MACROS = {"TRUE": 1, "FALSE": 0, "TCP": 6, "UDP": 17, "ICMP": 1, "ICMPV6": 58}
_COMPARE = {
    "==": np.equal, "=": np.equal, "!=": np.not_equal,
    "<": np.less, ">": np.greater, "<=": np.less_equal, ">=": np.greater_equal,
}


class _Columns:
    """Column slices of rows start..stop, read once each."""

    def __init__(self, store: CaptureStore, start: int, stop: int) -> None:
        self._store, self._start, self._stop = store, start, stop
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        values = self._cache.get(name)
        if values is None:
            values = self._cache[name] = self._store.column(name, self._start, self._stop)
        return values

    def __len__(self) -> int:
        return self._stop - self._start


def _protocol_is(number: int, version: int = 0):
    def present(c: _Columns) -> np.ndarray:
        mask = c["protocol"] == number
        return mask & (c["ip_version"] == version) if version else mask
    return present


def _everywhere(c: _Columns) -> np.ndarray:
    return np.ones(len(c), bool)


# field -> (where the packet has the field, its value); both exact on PLAIN rows only.
_FIELDS = {
    "zero": (_everywhere, lambda c: np.zeros(len(c), np.int64)),
    "outbound": (_everywhere, lambda c: c["outbound"]),
    "inbound": (_everywhere, lambda c: ~c["outbound"]),
    "loopback": (_everywhere, lambda c: c["loopback"]),
    "impostor": (_everywhere, lambda c: c["impostor"]),
    "ifIdx": (_everywhere, lambda c: c["if_idx"]),
    "subIfIdx": (_everywhere, lambda c: c["sub_if_idx"]),
    "length": (_everywhere, lambda c: c["length"]),
    "protocol": (_everywhere, lambda c: c["protocol"]),
    "ip": (_everywhere, lambda c: c["ip_version"] == 4),
    "ipv6": (_everywhere, lambda c: c["ip_version"] == 6),
    "tcp": (_everywhere, _protocol_is(6)),
    "udp": (_everywhere, _protocol_is(17)),
    "icmp": (_everywhere, _protocol_is(1, 4)),
    "icmpv6": (_everywhere, _protocol_is(58, 6)),
    "tcp.SrcPort": (_protocol_is(6), lambda c: c["src_port"]),
    "tcp.DstPort": (_protocol_is(6), lambda c: c["dst_port"]),
    "udp.SrcPort": (_protocol_is(17), lambda c: c["src_port"]),
    "udp.DstPort": (_protocol_is(17), lambda c: c["dst_port"]),
}


def _tokens(text: str) -> list[str] | None:
    tokens = []
    at = 0
    while at < len(text):
        m = _TOKEN.match(text, at)
        if m is None:
            break
        tokens.append(m.group(m.lastindex))
        at = m.end()
    return tokens


def _split(tokens: list[str], words: tuple[str, ...]) -> list[list[str]]:
    parts: list[list[str]] = [[]]
    for token in tokens:
        if token in words:
            parts.append([])
        else:
            parts[-1].append(token)
    return parts


def _number(token: str) -> int | None:
    if token in _MACROS:
        return _MACROS[token]
    try:
        value = int(token, 0)
    except ValueError:
        return None
    return value if 0 <= value <= 0xFFFFFFFF else None


def _test_mask(test: list[str], c: _Columns) -> np.ndarray | None:
    """The rows a single test accepts, or None when the columns cannot decide it."""
    negated = bool(test) and test[0] in ("not", "!")
    if negated:
        test = test[1:]
    if len(test) == 1 and test[0] in ("true", "false") and not negated:
        return np.full(len(c), test[0] == "true")
    if not test or test[0] not in _FIELDS:
        return None
    present, value_of = _FIELDS[test[0]]
    if len(test) == 1:
        compare, value = np.not_equal, 0
    elif len(test) == 3 and test[1] in _COMPARE and _number(test[2]) is not None:
        compare, value = _COMPARE[test[1]], _number(test[2])
    else:
        return None
    where = present(c)
    result = compare(value_of(c).astype(np.int64), value)
    return where & (~result if negated else result)


def _vectorised(text: str, c: _Columns) -> tuple[np.ndarray, bool]:
    """(a superset of the matching rows, whether it is exact) from the columns alone.

    Exactness holds on PLAIN rows only. Filters outside a flat or-of-ands of
    simple tests get no help: every row is a candidate.
    """
    everything = np.ones(len(c), bool)
    tokens = _tokens(text)
    if not tokens or any(t in ("(", ")", "?", ":") for t in tokens):
        return everything, False
    candidates = np.zeros(len(c), bool)
    exact = True
    for term in _split(tokens, ("or", "||")):
        mask = everything.copy()
        for test in _split(term, ("and", "&&")):
            accepted = _test_mask(test, c)
            if accepted is None:
                exact = False
            else:
                mask &= accepted
        candidates |= mask
    return candidates, exact


class DisplayIndex:
    """The rows of a store that match a display filter, kept up to date by update().

    `filter` is filter text ("" shows every row, even unparsable ones) (compiled with compile_filter at `layer`) or an
    object with match(raw, address) and, optionally, the `text` it was
    compiled from. Rows the columns decide exactly never reach match().
    """

    def __init__(self, store: CaptureStore, filter, layer: Layer = Layer.NETWORK) -> None:
        self.store = store
        if isinstance(filter, str):
            self.text = filter.strip()
            if not self.text:
                self._match = None
            else:
                from divertgui.engine.filter import compile_filter
                self._match = compile_filter(self.text, layer).match
        else:
            self.text = getattr(filter, "text", None) or ""
            self._match = filter.match
        self._generation = store.generation
        self._done = 0
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
        """Index the rows appended since the last update; returns how many of them match."""
        store = self.store
        if store.generation != self._generation:
            self._generation = store.generation
            self._done, self._parts, self._rows, self._count = 0, [], np.zeros(0, np.int64), 0
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

    def _scan(self, start: int, stop: int) -> np.ndarray:
        c = _Columns(self.store, start, stop)
        candidates, exact = _vectorised(self.text, c)
        plain = c["plain"]
        # The columns speak for plain rows only; every other row is a candidate.
        candidates |= ~plain
        decided = plain if exact else np.zeros(len(c), bool)
        accepted = candidates & decided
        undecided = np.flatnonzero(candidates & ~decided)
        if len(undecided):
            store, match = self.store, self._match
            hits = [i for i in undecided.tolist()
                    if match(store.raw(start + i), store.address(start + i))]
            accepted[hits] = True
        return np.flatnonzero(accepted).astype(np.int64) + start
