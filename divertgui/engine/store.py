"""The capture store: packet bytes in large arenas, one fixed-width record per packet.

Rows only ever get appended, and storage already handed out never moves: the
GUI thread may read any row below the count it was told while the session
thread appends more. Records live in chunks of CHUNK_ROWS rows; bytes live in
bytearray arenas of ARENA_BYTES each.
"""

from __future__ import annotations

import threading
from typing import Iterable, Sequence

import numpy as np

from divertgui.engine.address import Address, Layer
from divertgui.engine.hosts import HostList
from divertgui.engine.interface_names import InterfaceNames
from divertgui.engine.processes import Process, ProcessList
from divertgui.engine.store_columns import VECTOR_ROWS, address_columns, summaries_one_by_one, summarise, \
    summary_columns
from divertgui.engine.store_record import ARENA_BITS, ARENA_BYTES, COLUMNS, FLAG_COLUMNS, RECORD, Flags, Verdict

CHUNK_BITS = 14
CHUNK_ROWS = 1 << CHUNK_BITS
# As plain ints: an int & an IntFlag member goes through the enum's Python-level __rand__.
_OUTBOUND, _LOOPBACK, _IMPOSTOR, _IPV6, _SNIFFED, _FORWARD, _IP_CK, _TCP_CK, _UDP_CK, _UNKNOWN = (
    int(flag) for flag in (Flags.OUTBOUND, Flags.LOOPBACK, Flags.IMPOSTOR, Flags.IPV6, Flags.SNIFFED,
                           Flags.FORWARD_LAYER, Flags.IP_CHECKSUM, Flags.TCP_CHECKSUM, Flags.UDP_CHECKSUM,
                           Flags.DIRECTION_UNKNOWN))


def _new_block(lengths: np.ndarray, wall_ns, verdicts, processes, host: int = 0) -> np.ndarray:
    """Records for packets of `lengths` bytes, with the columns every way of appending gives."""
    if len(lengths) and int(lengths.max()) > ARENA_BYTES:
        raise ValueError(f"packet of {int(lengths.max())} bytes is larger than a store arena ({ARENA_BYTES} bytes)")
    block = np.zeros(len(lengths), RECORD)
    block["wall_ns"] = wall_ns
    block["verdict"] = verdicts
    block["length"] = lengths
    block["process"] = processes
    block["host"] = host
    return block


class CaptureStore:
    """Append-only packets with their addresses, verdicts and capture times.

    `wall_ns` is the wall-clock capture time (time.time_ns()); `timestamp`
    is the address's monotonic nanoseconds.
    """

    def __init__(self) -> None:
        self._append_lock = threading.Lock()
        # Outlive clear(): a process or host named once keeps its index.
        self.processes = ProcessList()
        self.generation = -1
        self.hosts = HostList()
        self.interfaces = InterfaceNames()
        self._reset()

    def _reset(self) -> None:
        self._records: list[np.ndarray] = []
        self._arenas: list[bytearray] = []
        self._arena_used = ARENA_BYTES
        self._edits: dict[int, tuple[bytes, int]] = {}   # row -> (current bytes, original length)
        self.edit_log: list[int] = []                     # rows in the order they were edited
        self._count = 0
        self.bytes_stored = 0
        self.generation += 1
        self.interfaces.clear()

    def __len__(self) -> int:
        return self._count

    # -- writing (any thread; each thread's rows keep their order) ------------

    def append(self, raw: bytes, address: Address, verdict: Verdict, wall_ns: int) -> int:
        return self.append_batch((raw,), (address,), verdict, wall_ns).start

    def append_batch(self, raws: Sequence[bytes], addresses: Sequence[Address],
                     verdicts: Sequence[int] | int, wall_ns: Sequence[int] | int,
                     processes: Sequence[int] | int = 0) -> range:
        """Append packets; `verdicts`, `wall_ns` and `processes` (indexes into `self.processes`)
        are one value for all or one per packet."""
        count = len(raws)
        if len(addresses) != count:
            raise ValueError(f"append_batch: {count} packets but {len(addresses)} addresses")
        lengths = np.fromiter(map(len, raws), np.int64, count)
        block = _new_block(lengths, wall_ns, verdicts, processes)
        address_columns(addresses, block)
        return self._append_block(block, raws, b"".join(raws), lengths)[0]

    def append_received(self, wall_ns: np.ndarray, timestamp: np.ndarray, if_idx: np.ndarray,
                        sub_if_idx: np.ndarray, address_flags: np.ndarray, verdicts: np.ndarray,
                        lengths: np.ndarray, blob: bytes, processes: np.ndarray | int = 0,
                        host: int = 0) -> tuple[range, int]:
        """Append packets given as columns and their joined bytes, as a capture service sends them;
        their rows and the store's generation they belong to.

        `address_flags` holds the address bits of the flags column; the rest is read from the bytes.
        `processes`: indexes into `self.processes`; `host`: an index into `self.hosts`."""
        lengths = np.asarray(lengths, np.int64)
        block = _new_block(lengths, wall_ns, verdicts, processes, host)
        block["timestamp"] = timestamp
        block["if_idx"] = if_idx
        block["sub_if_idx"] = sub_if_idx
        block["flags"] = address_flags
        ends = np.cumsum(lengths)
        view = memoryview(blob)
        raws = [view[end - length:end] for end, length in zip(ends.tolist(), lengths.tolist())]
        return self._append_block(block, raws, blob, lengths)

    def _append_block(self, block: np.ndarray, raws: Sequence[bytes], blob: bytes,
                      lengths: np.ndarray) -> tuple[range, int]:
        count = len(block)
        if count >= VECTOR_ROWS:
            summary_columns(raws, blob, lengths, block)
        else:
            summaries_one_by_one(raws, block)
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
            generation = self.generation
        return range(first, row), generation

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

    def name_interfaces(self, names: dict[int, str], host: int = 0) -> None:
        """The names, where they were captured, of interfaces (by index) that rows of `host` came on."""
        self.interfaces.learn(names, host)

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

    def set_verdicts_in(self, generation: int, rows: Sequence[int], verdicts: Sequence[int]) -> None:
        """set_verdict for rows of store `generation`, from a thread other than the one that empties
        the store: nothing when it has been emptied since."""
        with self._append_lock:
            if generation == self.generation:
                for row, verdict in zip(rows, verdicts):
                    self.set_verdict(row, verdict)

    def set_edited_in(self, generation: int, row: int, raw: bytes) -> None:
        """set_edited for a row of store `generation`, as set_verdicts_in."""
        with self._append_lock:
            if generation == self.generation:
                self.set_edited(row, raw)

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
            outbound=bool(flags & _OUTBOUND), loopback=bool(flags & _LOOPBACK),
            impostor=bool(flags & _IMPOSTOR), ipv6=bool(flags & _IPV6),
            if_idx=int(r["if_idx"]), sub_if_idx=int(r["sub_if_idx"]), timestamp=int(r["timestamp"]),
            sniffed=bool(flags & _SNIFFED),
            layer=Layer.NETWORK_FORWARD if flags & _FORWARD else Layer.NETWORK,
            ip_checksum=bool(flags & _IP_CK), tcp_checksum=bool(flags & _TCP_CK),
            udp_checksum=bool(flags & _UDP_CK), direction_known=not flags & _UNKNOWN,
        )

    def value(self, name: str, row: int) -> int:
        """One cell of a RECORD column, without copying a column."""
        return int(self._record(row)[name])

    def interface_name(self, row: int) -> str | None:
        """The name of the interface the row was captured on, where it was captured; None when not known."""
        record = self._record(row)
        return self.interfaces.name(int(record["if_idx"]), int(record["host"]))

    def host(self, row: int) -> str:
        """The name of the capture service's host the row came from; "" for the window's own."""
        return self.hosts.name(int(self._record(row)["host"]))

    def process(self, row: int) -> Process | None:
        """The local process the row's flow belongs to, None when not known."""
        return self.processes.get(int(self._record(row)["process"]))

    def verdict(self, row: int) -> Verdict:
        return Verdict(int(self._record(row)["verdict"]))

    def column(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """A copy of one column for rows start..stop (default: every published row).

        Names: the fields of RECORD, plus the booleans outbound, loopback,
        impostor, ipv6, sniffed, plain and direction_unknown taken from `flags`.
        """
        count = self._count
        stop = count if stop is None else min(stop, count)
        start = max(0, min(start, stop))
        flag = FLAG_COLUMNS.get(name)
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
