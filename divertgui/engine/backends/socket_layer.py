"""The SOCKET layer on Linux: cgroup eBPF programs report socket operations and refuse them.

The programs (socket_programs.py) are attached through bpf links to a cgroup
v2: by default the hierarchy's root, so that every process on the machine is
seen as WinDivert sees every process; a test attaches to a cgroup of its
own. A link lives as long as a descriptor refers to it, so the programs
leave the kernel when the handle closes or its process dies, however it
dies: there is nothing for `divert cleanup` to find.

Blocking: the handle's filter is compiled into the BIND and CONNECT
programs, which refuse a matching operation (the program sees EPERM) when
the handle has no SNIFF flag. LISTEN and ACCEPT come from sock_ops
callbacks, which cannot refuse anything, so a blocking handle whose
filter could select them is refused at open; CLOSE cannot be refused, as
in WinDivert.
"""

from __future__ import annotations

import dataclasses
import os

from divertgui.engine.address import Address, Event, Flag, Layer
from divertgui.engine.earlier_sockets import EarlierSockets
from divertgui.engine.errors import BpfError, SocketLayerError
from divertgui.engine.filter.assume import possible, possible_with
from divertgui.engine.header_fields import IPPROTO_TCP, IPPROTO_UDP

from . import bpf_syscall as sys_bpf
from . import socket_programs as programs
from .base import Backend, Captured
from .cgroups import cgroup2_mount, open_cgroup
from .flow_programs import FLOW_SIZE, flow_sock_ops
from .ringbuf import RingBuffer
from .socket_record import socket_closed, to_address
from .udp_flow_programs import SEEN_KEY_SIZE, udp_flows, udp_socket_release

RING_BYTES = 1 << 20
TABLE_ENTRIES = 1 << 14
SOCKET_EVENTS = (Event.SOCKET_BIND, Event.SOCKET_CONNECT, Event.SOCKET_LISTEN, Event.SOCKET_ACCEPT,
                 Event.SOCKET_CLOSE)
UNBLOCKABLE = (Event.SOCKET_LISTEN, Event.SOCKET_ACCEPT)
# attach type -> (the hook, the first Linux release that has it with bpf links to cgroups)
HOOKS = {
    sys_bpf.ATTACH_INET4_BIND: ("cgroup/bind4", "5.7"), sys_bpf.ATTACH_INET6_BIND: ("cgroup/bind6", "5.7"),
    sys_bpf.ATTACH_INET4_CONNECT: ("cgroup/connect4", "5.7"), sys_bpf.ATTACH_INET6_CONNECT: ("cgroup/connect6", "5.7"),
    sys_bpf.ATTACH_SOCK_OPS: ("sock_ops", "5.7"), sys_bpf.ATTACH_INET_SOCK_RELEASE: ("cgroup/sock_release", "5.9"),
    sys_bpf.ATTACH_INET_SOCK_CREATE: ("cgroup/sock_create", "5.7"),
    sys_bpf.ATTACH_UDP4_SENDMSG: ("cgroup/sendmsg4", "5.7"), sys_bpf.ATTACH_UDP6_SENDMSG: ("cgroup/sendmsg6", "5.7"),
    sys_bpf.ATTACH_INET_INGRESS: ("cgroup_skb/ingress", "5.7"), sys_bpf.ATTACH_INET_EGRESS: ("cgroup_skb/egress", "5.7"),
}


def selectable_events(tree) -> set[Event]:
    return {event for event in SOCKET_EVENTS if possible(tree, "event", int(event))}


def build(tree, maps: programs.Maps, events: set[Event], block: bool) -> list[programs.Program]:
    """The programs a filter that can select `events` needs."""
    wanted = []
    if events & {Event.SOCKET_BIND, Event.SOCKET_CLOSE}:
        # BIND, and the address bound, which a filter that selects no BIND still needs for CLOSE.
        wanted += [programs.sock_addr(tree, maps, Event.SOCKET_BIND, ipv6, block) for ipv6 in (False, True)]
    if Event.SOCKET_CONNECT in events:
        wanted += [programs.sock_addr(tree, maps, Event.SOCKET_CONNECT, ipv6, block) for ipv6 in (False, True)]
    if events & {Event.SOCKET_LISTEN, Event.SOCKET_ACCEPT, Event.SOCKET_CLOSE}:
        # The process behind LISTEN and ACCEPT, and the local address behind CLOSE.
        wanted += [programs.sock_create(maps), programs.sock_ops(tree, maps)]
    if Event.SOCKET_CLOSE in events:
        wanted.append(programs.sock_release(tree, maps))
        wanted += [programs.udp_send(maps, ipv6) for ipv6 in (False, True)]
        wanted.append(programs.udp_egress(maps))
    return wanted


class SocketBackend(Backend):
    """Backend(cgroup=None): SOCKET events of the processes in `cgroup` (a cgroup v2
    directory; None: the whole machine)."""

    name = "ebpf-socket"
    registered = True

    def __init__(self, cgroup: str | None = None):
        self.cgroup = cgroup
        self._fds: list[int] = []
        self._links: list[int] = []
        self._ring: RingBuffer | None = None
        self._filter = None
        self._stats = {"sniffed": 0, "dropped": 0}
        self._earlier: EarlierSockets | None = None

    layer = Layer.SOCKET

    def programs(self, tree, maps: programs.Maps, flags: Flag) -> list[programs.Program]:
        block = not flags & Flag.SNIFF
        events = selectable_events(tree)
        unblockable = events & set(UNBLOCKABLE)
        if block and unblockable:
            names = " and ".join(event.name.split("_", 1)[1] for event in sorted(unblockable))
            raise SocketLayerError(
                f"Linux cannot refuse {names} (they are reported by sock_ops callbacks, which cannot fail "
                f"an operation): open this SOCKET handle with SNIFF, or exclude those events from its "
                f"filter, e.g. \"(event == BIND or event == CONNECT) and ...\"", kind="kernel")
        return build(tree, maps, events, block)

    def open(self, filter, layer: Layer, priority: int, flags: Flag, params) -> None:
        if layer != self.layer:
            raise SocketLayerError(f"this eBPF backend serves the {self.layer.name} layer, not {layer.name}")
        self._filter = filter
        path = self.cgroup or cgroup2_mount()
        cgroup_fd = open_cgroup(path)
        try:
            maps = self._maps()
            for program in self.programs(filter.tree, maps, flags):
                prog_fd = self._load(program)
                try:
                    self._links.append(sys_bpf.attach_cgroup(prog_fd, cgroup_fd, program.attach_type))
                except BpfError as exc:
                    hook, since = HOOKS[program.attach_type]
                    if exc.errno == 1:
                        raise SocketLayerError(f"attaching {program.name} to the cgroup {path} needs CAP_BPF and "
                                               f"CAP_NET_ADMIN (or root)", kind="privilege") from None
                    raise SocketLayerError(f"cannot attach {program.name} to the cgroup {path}: {exc.strerror} "
                                           f"(the {hook} hook, and bpf links to cgroups, need Linux {since} or "
                                           f"later)", kind="kernel") from None
            self._ring = RingBuffer(maps.events, RING_BYTES)
            self._fds.remove(maps.events)
            # Made here: its lookups speak of the opening thread's network namespace.
            self._earlier = EarlierSockets()
        except BaseException:
            self.close()
            raise
        finally:
            os.close(cgroup_fd)

    def _maps(self) -> programs.Maps:
        return programs.Maps(
            self._keep(self._ring_buffer()),
            self._keep(sys_bpf.create_lru_hash(TABLE_ENTRIES, programs.OWNER_SIZE, "divert_owners")),
            self._keep(sys_bpf.create_lru_hash(TABLE_ENTRIES, 8, "divert_listen")),
            self._keep(sys_bpf.create_lru_hash(TABLE_ENTRIES, programs.LOCAL_SIZE, "divert_locals")),
            self._keep(sys_bpf.create_lru_hash(TABLE_ENTRIES, FLOW_SIZE, "divert_flows")))

    def _ring_buffer(self) -> int:
        try:
            return sys_bpf.create_ringbuf(RING_BYTES, "divert_events")
        except BpfError as exc:
            if exc.errno == 1:
                raise SocketLayerError("creating eBPF maps needs CAP_BPF (or root)", kind="privilege") from None
            raise SocketLayerError(f"this kernel cannot create a BPF ring buffer ({exc.strerror}): the "
                                   f"{self.layer.name} layer needs BPF_MAP_TYPE_RINGBUF, Linux 5.8 or later",
                                   kind="kernel") from None

    def _keep(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def _load(self, program: programs.Program) -> int:
        try:
            return self._keep(sys_bpf.load_program(program.prog_type, program.attach_type, program.code,
                                                   program.name))
        except BpfError as exc:
            if exc.errno == 1:
                raise SocketLayerError(f"loading the eBPF program {program.name} needs CAP_BPF and "
                                       f"CAP_NET_ADMIN (or root)", kind="privilege") from None
            lines = [line for line in exc.log.strip().splitlines()
                     if not line.startswith(("processed ", "verification time", "stack depth"))]
            detail = lines[-1:] or [exc.strerror]
            raise SocketLayerError(f"this kernel refused the eBPF program {program.name} "
                                   f"({program.event.name if program.event else 'socket tracking'}): "
                                   f"{detail[0]}", kind="kernel") from None

    def recv_batch(self, max_count: int, timeout: float | None) -> list[Captured]:
        ring = self._ring
        records = ring.records(max_count)
        if not records:
            ring.wait(timeout)
            records = ring.records(max_count)
        out = []
        for raw in records:
            for address, blocked in self._events(raw):
                if self._filter.match(b"", address):
                    self._stats["dropped" if blocked else "sniffed"] += 1
                    out.append(Captured(b"", address, 0))
        return out

    def _events(self, raw: bytes) -> list[tuple[Address, bool]]:
        """The events a ring buffer record stands for, each with whether it was refused."""
        return [self._with_process(raw)]

    def _with_process(self, raw: bytes) -> tuple[Address, bool]:
        """The record's event, with its process found by socket diagnostics where the programs
        knew none: a socket created before the handle opened (its FLOW events, and the LISTEN
        and ACCEPT that sock_ops callbacks report)."""
        address, blocked = to_address(raw)
        if not address.flow.process_id and self._earlier is not None:
            self._earlier.fill(address.flow)
        return address, blocked

    def verdict(self, ticket: int, raw) -> None:
        raise SocketLayerError("a SOCKET event has no pending verdict: the kernel decided when it happened")

    def inject(self, raw: bytes, address) -> None:
        raise SocketLayerError("SOCKET events cannot be injected (as in WinDivert)")

    def close(self) -> None:
        for fd in self._links + self._fds:
            os.close(fd)
        self._links, self._fds = [], []
        if self._earlier is not None:
            self._earlier.close()
            self._earlier = None
        if self._ring is not None:
            self._ring.close()
            self._ring = None

    def stats(self) -> dict[str, int]:
        return dict(self._stats)

    def fileno(self) -> int | None:
        return self._ring.fd if self._ring is not None else None


class FlowBackend(SocketBackend):
    """Backend(cgroup=None): FLOW events (TCP connections and UDP flows) of the processes in `cgroup`."""

    name = "ebpf-flow"
    layer = Layer.FLOW

    def __init__(self, cgroup: str | None = None):
        super().__init__(cgroup)
        self._udp_flows = OpenUdpFlows()
        self._stats["forgotten"] = 0

    def programs(self, tree, maps: programs.Maps, flags: Flag) -> list[programs.Program]:
        wanted = [programs.sock_create(maps)]
        if _may_select(tree, IPPROTO_TCP, "tcp"):
            wanted.append(flow_sock_ops(tree, maps))
        if _may_select(tree, IPPROTO_UDP, "udp"):
            track = possible(tree, "event", int(Event.FLOW_DELETED))
            wanted += [udp_flows(tree, maps, outbound, track) for outbound in (True, False)]
            if track:
                wanted.append(udp_socket_release(maps))
        return wanted

    def _maps(self) -> programs.Maps:
        seen = self._keep(sys_bpf.create_lru_hash(TABLE_ENTRIES, 8, "divert_udp_seen", key_size=SEEN_KEY_SIZE))
        return super()._maps()._replace(seen=seen)

    def _events(self, raw: bytes) -> list[tuple[Address, bool]]:
        if socket_closed(raw):
            closed, _ = to_address(raw)
            return [(flow, False) for flow in self._udp_flows.close(closed.flow.endpoint_id, closed.timestamp)]
        address, blocked = self._with_process(raw)
        if address.flow.protocol == IPPROTO_UDP:
            self._stats["forgotten"] += self._udp_flows.open(address)
        return [(address, blocked)]


def _may_select(tree, protocol: int, name: str) -> bool:
    """Whether the filter can select flows of this protocol (`name` its macro)."""
    known = {"protocol": protocol, "tcp": 0, "udp": 0, "icmp": 0, "icmpv6": 0}
    return possible_with(tree, known | {name: 1})


class OpenUdpFlows:
    """The UDP flows reported established, by socket, until their socket closes; at most
    TABLE_ENTRIES, the oldest socket's forgotten (and counted) beyond. A flow the kernel
    reports again (its seen map forgot it) is kept once."""

    def __init__(self) -> None:
        self._by_socket: dict[int, dict[tuple, Address]] = {}
        self._count = 0

    def open(self, address: Address) -> int:
        """Remembers an ESTABLISHED flow; returns how many flows were forgotten to make room."""
        flow = address.flow
        flows = self._by_socket.setdefault(flow.endpoint_id, {})
        key = (flow.local_addr, flow.local_port, flow.remote_addr, flow.remote_port)
        if key in flows:
            return 0
        flows[key] = address
        self._count += 1
        forgotten = 0
        while self._count > TABLE_ENTRIES:
            oldest = self._by_socket.pop(next(iter(self._by_socket)))
            self._count -= len(oldest)
            forgotten += len(oldest)
        return forgotten

    def close(self, endpoint_id: int, timestamp: int) -> list[Address]:
        """The DELETED events of a closed socket's flows."""
        flows = self._by_socket.pop(endpoint_id, {})
        self._count -= len(flows)
        return [flow.copy(event=Event.FLOW_DELETED, timestamp=timestamp,
                          flow=dataclasses.replace(flow.flow)) for flow in flows.values()]
