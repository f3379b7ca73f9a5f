"""An event capture: sniffing FLOW, SOCKET and REFLECT handles, polled together for records.

Each chosen layer gets a handle of its own with its own filter, opened SNIFF
and RECV_ONLY: watching events never refuses a socket operation. On Linux the
FLOW and SOCKET programs can be attached to one cgroup v2 (a path under the
hierarchy's mount) instead of the whole machine, to watch a container or a
service alone.
"""

from __future__ import annotations

import sys
import time

from divertgui.engine.address import Flag, Layer
from divertgui.engine.backends import exited_processes
from divertgui.engine.errors import EventCaptureError
from divertgui.engine.event_records import EVENT_LAYERS, EventRecord, from_address
from divertgui.engine.processes import Process, describe

BATCH = 255
NAMES_KEPT = 4096           # pids whose name is remembered for events after the process ended


def event_backend(layer: Layer, cgroup: str):
    """The backend for `layer`: the system's own, or the eBPF one attached to `cgroup` (a path
    under the cgroup v2 mount)."""
    if not cgroup or layer == Layer.REFLECT:
        return None
    if not sys.platform.startswith("linux"):
        raise EventCaptureError("a cgroup applies on Linux only", layer)
    from divertgui.engine.backends.cgroups import CgroupError, cgroup_directory
    from divertgui.engine.backends.socket_layer import FlowBackend, SocketBackend
    try:
        path = cgroup_directory(cgroup)
    except (CgroupError, ValueError) as exc:
        raise EventCaptureError(getattr(exc, "strerror", None) or str(exc), layer) from None
    return FlowBackend(path) if layer == Layer.FLOW else SocketBackend(path)


class EventCapture:
    """Handles for `filters` (layer -> filter text), opened by `open`, read by `poll`."""

    def __init__(self, filters: dict[Layer, str], cgroup: str = ""):
        unknown = set(filters) - set(EVENT_LAYERS)
        if not filters or unknown:
            raise EventCaptureError("an event capture takes one or more of the FLOW, SOCKET and REFLECT layers")
        self.filters = {layer: filters[layer] for layer in EVENT_LAYERS if layer in filters}
        self.cgroup = cgroup
        self._handles: list = []
        self._names: dict[int, Process] = {}
        self._exits = None                          # from exited_processes.acquire(), while open
        self._wall_offset = 0

    @property
    def layers(self) -> list[Layer]:
        return list(self.filters)

    def open(self) -> "EventCapture":
        from divertgui.engine.filter import FilterError
        from divertgui.engine.handle import Divert
        self._wall_offset = time.time_ns() - time.monotonic_ns()
        try:
            if sys.platform.startswith("linux"):
                self._exits = exited_processes.acquire()
            for layer, text in self.filters.items():
                try:
                    handle = Divert(text or "true", layer, 0, Flag.SNIFF | Flag.RECV_ONLY,
                                    backend=event_backend(layer, self.cgroup))
                    handle.open()
                except FilterError as exc:
                    raise EventCaptureError(f"{layer.name} filter: {exc.message}", layer, exc.position) from None
                except EventCaptureError:
                    raise
                except Exception as exc:
                    raise EventCaptureError(f"the {layer.name} layer cannot be watched: {exc}", layer) from None
                self._handles.append(handle)
        except BaseException:
            self.close()
            raise
        return self

    def poll(self) -> list[EventRecord]:
        """The events each handle has now, without waiting."""
        records = []
        for handle in self._handles:
            for packet in handle.recv_batch(BATCH, 0):
                records.append(from_address(packet.address, packet.raw, self._wall_offset, self._describe))
        records.sort(key=lambda record: record.time_ns)
        return records

    def _describe(self, pid: int) -> Process:
        """The process's name and user now, else as an earlier event of it or its exit saw them."""
        process = describe(pid, self._exits)
        if process.name:
            if len(self._names) >= NAMES_KEPT:
                self._names.pop(next(iter(self._names)))
            self._names[pid] = process
            return process
        return self._names.get(pid, process)

    def close(self) -> None:
        if self._exits is not None:
            self._exits = None
            exited_processes.release()
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.close()
