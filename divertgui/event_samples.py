"""WinDivert's event samples: `divert socketdump` (socket operations) and `divert flowtrack`
(TCP and UDP flows), one line per event with its process."""

from __future__ import annotations

from divertgui.engine.address import Flag, Layer
from divertgui.engine.address_text import event_endpoint_text
from divertgui.engine.header_fields import TRANSPORT_PROTOCOLS

PROTOCOLS = {number: name for name, number in TRANSPORT_PROTOCOLS.items()}


def process_name(pid: int, seen_as: str = "") -> str:
    """The process's name now; else the name the kernel gave it at the event, else "?"."""
    import psutil
    try:
        return psutil.Process(pid).name()
    except psutil.Error:
        return seen_as or "?"


def event_line(address) -> str:
    """EVENT PID PROGRAM PROTOCOL LOCAL -> REMOTE, as WinDivert's socketdump and flowtrack print them."""
    data = address.flow
    event = address.event.name.split("_", 1)[1]
    protocol = PROTOCOLS.get(data.protocol, str(data.protocol))
    verdict = "  [blocked]" if not address.sniffed else ""
    return (f"{event:<11} {data.process_id:>7} {process_name(data.process_id, data.process_name):<16} {protocol:<6} "
            f"{event_endpoint_text(data.local_addr, data.local_port, address.ipv6)} -> "
            f"{event_endpoint_text(data.remote_addr, data.remote_port, address.ipv6)}{verdict}")


def socketdump(filter_text: str, block: bool, say, stop, count: int | None = None, priority: int = 0,
               cgroup: str = "", ready=None) -> int:
    """Prints each matching socket operation (and refuses it with `block`) until `stop` or `count` events;
    with `cgroup` (a path under the cgroup v2 mount), only those of that cgroup's processes.
    `ready()` is called once the handle is open."""
    flags = Flag.RECV_ONLY if block else Flag.SNIFF | Flag.RECV_ONLY
    return _dump(filter_text, Layer.SOCKET, flags, say, stop, count, priority, cgroup, ready)


def flowtrack(filter_text: str, say, stop, count: int | None = None, priority: int = 0, cgroup: str = "",
              ready=None) -> int:
    """Prints each matching flow as it is established and deleted, until `stop` or `count` events;
    with `cgroup`, only those of that cgroup's processes. `ready()` is called once the handle is open."""
    return _dump(filter_text, Layer.FLOW, Flag.SNIFF | Flag.RECV_ONLY, say, stop, count, priority, cgroup, ready)


def _dump(filter_text: str, layer: Layer, flags: Flag, say, stop, count: int | None, priority: int,
          cgroup: str, ready) -> int:
    from divertgui.engine.event_capture import event_backend
    from divertgui.engine.handle import Divert
    seen = 0
    with Divert(filter_text, layer, priority=priority, flags=flags, backend=event_backend(layer, cgroup)) as handle:
        if ready:
            ready()
        while not stop and (count is None or seen < count):
            for packet in handle.recv_batch(64 if count is None else min(64, count - seen), 0.2):
                say(event_line(packet.address))
                seen += 1
    return seen
