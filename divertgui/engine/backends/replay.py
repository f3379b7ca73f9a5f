"""Replay of a capture file as if its packets were arriving now.

Packets come out at their recorded pace (scaled by `speed`) or as fast as
they can be read (speed=0), with the direction and interface the file
records and monotonic timestamps of the replay. The handle's filter and
flags apply as they do to live traffic. A released packet goes nowhere, but
every verdict and injection is counted and logged so that the session can
show what would have happened.
"""

from __future__ import annotations

import os
import threading
import time
from typing import BinaryIO, NamedTuple

from divertgui.engine.address import Address, Flag, Layer, Param
from divertgui.engine.header_fields import ip_version
from divertgui.engine.checksum import checksums_valid
from divertgui.engine.backends.base import Backend, Captured
from divertgui.engine.errors import CaptureFileError
from divertgui.engine.interface_names import InterfaceNames
from divertgui.engine.pcapng import CaptureReader, CaptureRecord, is_malformed


class Outcome(NamedTuple):
    kind: str               # "released", "modified", "dropped" or "injected"
    ticket: int             # 0 for injected packets
    raw: bytes | None       # the bytes released or injected; None when dropped
    address: Address


class ReplayBackend(Backend):
    name = "replay"

    def __init__(self, path: str | os.PathLike, speed: float = 1.0, file: BinaryIO | None = None):
        """`file`, when given, is `path` already open (the capture service opens a client's file)."""
        if speed < 0:
            raise ValueError(f"replay speed must be 0 (as fast as possible) or positive, not {speed}")
        self.path = os.fspath(path)
        self._file = file
        self.speed = float(speed)
        self.error: CaptureFileError | None = None
        self._reader: CaptureReader | None = None
        self._records = None
        self._next: CaptureRecord | None = None
        self._filter = None
        self._layer = Layer.NETWORK
        self._flags = Flag(0)
        self._clock_start = 0       # monotonic ns when the first record was replayed
        self._file_start = 0        # that record's file timestamp
        self._pending: dict[int, tuple[bytes, Address]] = {}
        self._interface_names = InterfaceNames()
        self._interfaces_seen: set[tuple[int, str]] = set()
        self._last_ticket = 0
        self._outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._recv_open = self._send_open = False
        self._exhausted = False
        self._error_raised = False
        self._counts = dict.fromkeys(
            ("read", "malformed", "diverted", "sniffed", "passed", "dropped", "sent", "released", "modified", "injected",
             "unanswered", "expired", "overflowed", "bypassed"), 0)

    # -- Backend

    def open(self, filter, layer: Layer, priority: int, flags: Flag, params: dict[Param, int]) -> None:
        self._reader = CaptureReader(self._file or self.path, name=self.path)
        self._file = None
        self._records = iter(self._reader)
        self._filter = filter
        self._layer = Layer(layer)
        self._flags = Flag(flags)
        self._recv_open = not flags & Flag.SEND_ONLY
        self._send_open = not flags & Flag.RECV_ONLY

    def recv_batch(self, max_count: int, timeout: float | None) -> list[Captured]:
        if self._records is None:
            raise RuntimeError("replay backend is not open")
        deadline = None if timeout is None else time.monotonic_ns() + int(timeout * 1e9)
        batch: list[Captured] = []
        while len(batch) < max_count and self._recv_open and not self._wake.is_set():
            record = self._peek()
            if record is None:
                break
            due = self._due(record)
            now = time.monotonic_ns()
            if due > now:
                if batch:
                    break
                wait_until = due if deadline is None else min(due, deadline)
                if wait_until <= now:
                    break
                self._wake.wait((wait_until - now) / 1e9)
                continue
            self._next = None
            captured = self._divert(record, due if self.speed else now)
            if captured is not None:
                batch.append(captured)
            elif deadline is not None and time.monotonic_ns() >= deadline:
                break
        if not batch and self.error is not None and not self._error_raised:
            # The packets before a fault were all delivered; now say where the file broke.
            self._error_raised = True
            raise self.error
        return batch

    def verdict(self, ticket: int, raw: bytes | None) -> None:
        self.verdict_many([(ticket, raw)])

    def verdict_many(self, verdicts: list[tuple[int, bytes | None]]) -> None:
        with self._lock:
            if not self._send_open:
                raise RuntimeError("replay handle is shut down for sending")
            for ticket, raw in verdicts:
                pending = self._pending.pop(ticket, None)
                if pending is None:
                    raise KeyError(f"no pending verdict for packet {ticket} in replay of {self.path}")
                original, address = pending
                if raw is None:
                    kind, raw_kept = "dropped", None
                else:
                    raw_kept = bytes(raw)
                    kind = "released" if raw_kept == original else "modified"
                    self._counts["sent"] += 1
                self._counts[kind] += 1
                self._outcomes.append(Outcome(kind, ticket, raw_kept, address))

    def inject(self, raw: bytes, address: Address) -> None:
        with self._lock:
            if not self._send_open:
                raise RuntimeError("replay handle is shut down for sending")
            self._counts["injected"] += 1
            self._outcomes.append(Outcome("injected", 0, bytes(raw), address))

    def shutdown(self, how: str) -> None:
        if how not in ("recv", "send", "both"):
            raise ValueError(f"shutdown how must be 'recv', 'send' or 'both', not {how!r}")
        if how in ("recv", "both"):
            self._recv_open = False
            self._wake.set()
        if how in ("send", "both"):
            self._send_open = False

    def close(self) -> None:
        self._recv_open = self._send_open = False
        self._wake.set()
        with self._lock:
            # A packet received and never sent back is dropped, as on a live handle.
            self._counts["unanswered"] += len(self._pending)
            self._counts["dropped"] += len(self._pending)
            self._pending.clear()
        if self._records is not None:
            self._records.close()
        if self._reader is not None:
            self._reader.close()

    def stats(self) -> dict[str, int]:
        with self._lock:
            counts = dict(self._counts)
            counts["pending"] = len(self._pending)
        counts["skipped"] = sum(self._reader.skipped.values()) if self._reader else 0
        counts["finished"] = int(self.finished)
        return counts

    # -- replay specifics

    def interface_name(self, if_idx: int) -> str | None:
        """The file's name of the interface of the packets replayed with `if_idx`; None when it
        names none, or names two (a file of several sections)."""
        return self._interface_names.name(if_idx) or None

    @property
    def finished(self) -> bool:
        """True once every packet of the file has been replayed (or the file broke)."""
        return self._exhausted and self._next is None

    @property
    def skipped(self) -> dict[str, int]:
        """Records of the file that are not IP packets, by reason."""
        return dict(self._reader.skipped) if self._reader else {}

    def take_outcomes(self) -> list[Outcome]:
        """What was released, modified, dropped or injected since the last call."""
        with self._lock:
            outcomes, self._outcomes = self._outcomes, []
        return outcomes

    def _peek(self) -> CaptureRecord | None:
        if self._next is None and not self._exhausted:
            try:
                self._next = next(self._records)
                self._counts["read"] += 1
            except StopIteration:
                self._exhausted = True
            except CaptureFileError as error:
                self._exhausted = True
                self.error = error
        return self._next

    def _due(self, record: CaptureRecord) -> int:
        """The monotonic time at which `record` is replayed."""
        if not self._clock_start:
            self._clock_start = time.monotonic_ns()
            self._file_start = record.timestamp_ns
        if not self.speed:
            return self._clock_start
        # Out-of-order timestamps in a file are replayed at once, not waited for.
        elapsed = max(record.timestamp_ns - self._file_start, 0)
        return self._clock_start + int(elapsed / self.speed)

    def _divert(self, record: CaptureRecord, timestamp: int) -> Captured | None:
        raw = record.raw
        if (record.if_idx, record.interface_name) not in self._interfaces_seen:
            self._interfaces_seen.add((record.if_idx, record.interface_name))
            self._interface_names.learn({record.if_idx: record.interface_name})
        address = Address(
            outbound=bool(record.outbound),
            direction_known=record.outbound is not None,
            loopback=bool(record.loopback),
            ipv6=ip_version(raw) == 6,
            if_idx=record.if_idx,
            timestamp=timestamp,
            layer=self._layer,
            sniffed=bool(self._flags & Flag.SNIFF),
        )
        address.ip_checksum, address.tcp_checksum, address.udp_checksum = checksums_valid(raw)
        if is_malformed(raw):
            # No filter can judge it; it is shown (as Wireshark shows a malformed packet), not passed unseen.
            self._counts["malformed"] += 1
        elif self._filter is not None and not self._filter.match(raw, address):
            self._counts["passed"] += 1
            return None
        if self._flags & Flag.DROP:
            self._counts["dropped"] += 1
            return None
        if self._flags & Flag.SNIFF:
            self._counts["sniffed"] += 1
            return Captured(raw, address, 0)
        with self._lock:
            self._last_ticket += 1
            ticket = self._last_ticket
            self._pending[ticket] = (raw, address)
            self._counts["diverted"] += 1
        return Captured(raw, address, ticket)
