"""The service's stand-in for the capture store: what the Session appends and
changes goes to the client as binary frames, in order with the events.

The service keeps no packet bytes: the client's store is the only copy.
Appended rows wait and leave together, as one frame, just before the next
frame of any other kind (the session's "rows" event announcing them, at
most EMIT_INTERVAL later, is one): each frame costs the window a wake-up and
the numpy calls that decode it, whatever its size.
"""

from __future__ import annotations

import threading
from typing import Callable, Sequence

import numpy as np

from divertgui.engine.address import Address
from divertgui.engine.processes import ProcessList
from divertgui.engine.store_columns import address_columns
from divertgui.service import framing
from divertgui.service.packet_frames import ROW, encode_edit, encode_packets, encode_verdicts

# Rows waiting beyond this many bytes leave without waiting for the next event.
MAX_WAITING_BYTES = 1 << 20


class StoreRelay:
    """The writing side of CaptureStore, turned into frames for `send(frame_bytes)`."""

    def __init__(self, send: Callable[[bytes], None]):
        self._send = send
        self._lock = threading.Lock()
        self._verdicts: list[tuple[int, int]] = []
        self._waiting_rows: list[np.ndarray] = []
        self._waiting_blobs: list[bytes] = []
        self._waiting_bytes = 0
        self._count = 0
        self.bytes_stored = 0
        self.generation = 0
        # The session names processes here; each index goes to the client once, before its packets.
        self.processes = ProcessList()
        self._processes_sent = 1

    def __len__(self) -> int:
        return self._count

    def append(self, raw: bytes, address: Address, verdict, wall_ns: int) -> int:
        return self.append_batch((raw,), (address,), verdict, wall_ns).start

    def append_batch(self, raws: Sequence[bytes], addresses: Sequence[Address], verdicts, wall_ns,
                     processes=0) -> range:
        count = len(raws)
        if len(addresses) != count:
            raise ValueError(f"append_batch: {count} packets but {len(addresses)} addresses")
        rows = np.zeros(count, ROW)
        rows["wall_ns"] = wall_ns
        rows["verdict"] = verdicts
        rows["length"] = np.fromiter(map(len, raws), np.int64, count)
        rows["process"] = processes
        address_columns(addresses, rows)
        blob = b"".join(raws)
        with self._lock:
            first = self._count
            self._send_new_processes()
            self._waiting_rows.append(rows)
            self._waiting_blobs.append(blob)
            self._waiting_bytes += len(blob) + rows.nbytes
            if self._waiting_bytes >= MAX_WAITING_BYTES:
                self._flush()
            self._count += count
            self.bytes_stored += len(blob)
        return range(first, first + count)

    def name_interfaces(self, names: dict[int, str], host: int = 0) -> None:
        """The capturing side's names of interfaces its rows came on, to the client before those rows."""
        self.send_event({"type": "interfaces", "interfaces": [[if_idx, name] for if_idx, name in names.items()]})

    def set_verdict(self, row: int, verdict) -> None:
        with self._lock:
            self._verdicts.append((row, int(verdict)))

    def set_edited(self, row: int, raw: bytes) -> None:
        with self._lock:
            self._flush()
            self._send(framing.encode(framing.EDIT, encode_edit(row, bytes(raw))))

    def clear(self) -> None:
        with self._lock:
            self._verdicts.clear()
            self._waiting_rows.clear()
            self._waiting_blobs.clear()
            self._waiting_bytes = 0
            self._send(framing.encode(framing.CLEAR, b""))
            self._count = 0
            self.bytes_stored = 0
            self.generation += 1

    def send_event(self, message: dict) -> None:
        """An event, after every row change made before it."""
        frame = framing.encode_json(message)
        with self._lock:
            self._flush()
            self._send(frame)

    def _send_new_processes(self) -> None:
        known = len(self.processes)
        if known > self._processes_sent:
            described = [[i, *self.processes.get(i)] for i in range(self._processes_sent, known)]
            self._flush()
            self._send(framing.encode_json({"type": "processes", "processes": described}))
            self._processes_sent = known

    def _flush(self) -> None:
        """The waiting rows, then the verdict changes (which may be of those rows)."""
        if self._waiting_rows:
            rows = self._waiting_rows[0] if len(self._waiting_rows) == 1 else np.concatenate(self._waiting_rows)
            blob = b"".join(self._waiting_blobs)
            self._waiting_rows.clear()
            self._waiting_blobs.clear()
            self._waiting_bytes = 0
            self._send(framing.encode(framing.PACKETS, encode_packets(rows, blob)))
        if self._verdicts:
            changes, self._verdicts = self._verdicts, []
            self._send(framing.encode(framing.VERDICTS, encode_verdicts(changes)))
