"""The SOCKET layer's eBPF programs, assembled for one handle.

    socket()   cgroup/sock_create   remembers which process created the socket, and its name (owners map)
    bind()     cgroup/bind4, bind6        BIND: the address asked for; refusable
    connect()  cgroup/connect4, connect6  CONNECT: local as bound so far, remote asked for; refusable
               sock_ops TCP_CONNECT_CB    (no event) the local address the kernel chose
    listen()   sock_ops TCP_LISTEN_CB     LISTEN (the owners map gives the process)
    accept     sock_ops PASSIVE_ESTABLISHED_CB  ACCEPT when the handshake completes; the
               listener (listeners map) is the parent endpoint and gives the process
    close()    cgroup/sock_release        CLOSE of a socket that had a port
    send       cgroup/sendmsg4, sendmsg6  (no event) the local address and port of an unconnected
               UDP socket, which its first sendto() chose after the hook, for its CLOSE
               cgroup_skb/egress          (no event) the same of a connected UDP socket, which
               connect() chose after its hook (send() on it runs no sendmsg hook), as its
               datagrams leave

A cgroup/sock_release program may not read the socket's own address, so
the others remember it (locals map) for the CLOSE event. A connected UDP
socket closed before it sent a datagram has had no hook run since its port
was chosen: its CLOSE has local address and port 0.

The programs that run in the calling process (sock_create, bind, connect,
sock_release) take its id and name from the running task; sock_ops
callbacks may run while another task is current (a handshake completes
in softirq), so theirs come from the owners map.

Each fills the record (socket_record.py), runs the handle's filter on it
(ebpf_filter.py) and, when it matches, copies it to the ring buffer and
returns 0 (the operation fails with EPERM) if the handle blocks, else 1.
Endpoint ids are the kernel's socket cookies.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

from divertgui.engine.address import Event
from divertgui.engine.filter import Const, Node
from divertgui.engine.header_fields import IPPROTO_TCP, IPPROTO_UDP

from . import bpf_syscall as sys_bpf
from . import ebpf
from .ebpf import B, DW, H, R0, R1, R2, R3, R4, R6, R7, R10, W, Assembler
from .ebpf_filter import compile_filter
from .socket_record import COMM_SIZE, OFFSET, RECORD, SIZE

AF_INET, AF_INET6 = 2, 10
KEY, VALUE = RECORD - 8, RECORD - 32       # map key and value slots below the record
LOCAL_SIZE = 24                             # a locals map value: the address's 4 words, the port (8 bytes)
OWNER_SIZE = 8 + COMM_SIZE                  # an owners map value: the pid (8 bytes), the process's name
MAP_LOOKUP, MAP_UPDATE, MAP_DELETE = 1, 2, 3
SOCK_OPS_CONNECT, SOCK_OPS_LISTEN, SOCK_OPS_PASSIVE_ESTABLISHED = 3, 11, 5

# Offsets in the kernel's context structures (linux/bpf.h).
SOCK_ADDR = {"user_ip4": 4, "user_ip6": 8, "user_port": 24, "protocol": 36, "sk": 64}
SOCK = {"family": 4, "protocol": 12, "src_ip4": 24, "src_ip6": 28, "src_port": 44, "dst_port": 48,
        "dst_ip4": 52, "dst_ip6": 56}
SKB_SK = 168                                # __sk_buff's socket pointer
SOCK_OPS = {"op": 0, "family": 20, "remote_ip4": 24, "local_ip4": 28, "remote_ip6": 32, "local_ip6": 48,
            "remote_port": 64, "local_port": 68}


class Maps(NamedTuple):
    events: int         # the ring buffer
    owners: int         # socket cookie -> pid and name of the process that created the socket
    listeners: int      # family << 16 | port -> the listening socket's cookie
    locals: int         # socket cookie -> its local address and port (LOCAL_SIZE bytes)
    flows: int = -1     # socket cookie -> (outbound, parent cookie) of a FLOW-layer flow
    seen: int = -1      # UDP flows (socket cookie and 5-tuple) the FLOW layer has reported


class Program(NamedTuple):
    name: str
    prog_type: int
    attach_type: int
    event: Event | None  # the event it reports (None: it reports none)
    code: bytes


def field_at(field: str) -> int:
    return RECORD + OFFSET[field]


def begin_record(code: Assembler, event: Event, outbound: bool) -> None:
    """r6 = ctx; the record zeroed, then its timestamp, endpoint id, event and direction set."""
    code.mov(R6, R1)
    for offset in range(0, SIZE, 8):
        code.store_imm(DW, R10, RECORD + offset, 0)
    code.call(ebpf.KTIME_GET_NS)                                    # CLOCK_MONOTONIC, as Address wants
    code.store(DW, R10, field_at("timestamp"), R0)
    code.mov(R1, R6)
    code.call(ebpf.GET_SOCKET_COOKIE)
    code.store(DW, R10, field_at("endpoint_id"), R0)
    code.store_imm(W, R10, field_at("event"), int(event))
    code.store_imm(B, R10, field_at("outbound"), int(outbound))


def _current_process(code: Assembler) -> None:
    """The record's process: the one whose task runs the program, with its name."""
    code.call(ebpf.GET_CURRENT_PID_TGID)
    code.alu_imm(ebpf.RSH, R0, 32)                                  # the upper half is the process id
    code.store(W, R10, field_at("process_id"), R0)
    current_name(code, field_at("process_name"))


def current_name(code: Assembler, to: int) -> None:
    """The running task's name (comm, NUL-terminated) to the stack at `to`, COMM_SIZE bytes;
    zeros where this process may not read it."""
    if not names_readable():
        for i in range(0, COMM_SIZE, 8):
            code.store_imm(DW, R10, to + i, 0)
        return
    code.mov(R1, R10)
    code.alu_imm(ebpf.ADD, R1, to)                                  # r1 = where the name goes
    code.mov_imm(R2, COMM_SIZE)                                     # r2 = its room
    code.call(ebpf.GET_CURRENT_COMM)                                # copies current->comm there


@functools.cache
def names_readable() -> bool:
    """Whether these programs may call bpf_get_current_comm: Linux 6.x lets a cgroup program
    loaded with CAP_PERFMON (or CAP_SYS_ADMIN) do so, and no other; asked of the kernel once,
    with a program that does nothing else."""
    code = Assembler()
    current = -COMM_SIZE
    code.mov(R1, R10)
    code.alu_imm(ebpf.ADD, R1, current)
    code.mov_imm(R2, COMM_SIZE)
    code.call(ebpf.GET_CURRENT_COMM)
    code.mov_imm(R0, 1)
    code.exit()
    try:
        fd = sys_bpf.load_program(sys_bpf.PROG_TYPE_CGROUP_SOCK, sys_bpf.ATTACH_INET_SOCK_CREATE, code.assemble(),
                                  "divert_names")
    except OSError:
        return False
    os.close(fd)
    return True


def _copy_ipv4(code: Assembler, base: int, offset: int, field: str) -> None:
    """An IPv4 address (network order) from base+offset into the record as ::ffff:a.b.c.d."""
    code.load(W, R2, base, offset)
    code.swap(R2, 32)
    code.store(W, R10, field_at(field) + 12, R2)
    code.store_imm(W, R10, field_at(field) + 8, 0xFFFF)


def _copy_ipv6(code: Assembler, base: int, offset: int, field: str) -> None:
    for i in range(4):
        code.load(W, R2, base, offset + 4 * i)
        code.swap(R2, 32)
        code.store(W, R10, field_at(field) + 4 * i, R2)


def _copy_port(code: Assembler, base: int, offset: int, field: str, network_order: bool) -> None:
    code.load(W, R2, base, offset)
    if network_order:
        code.swap(R2, 16)
    code.store(H, R10, field_at(field), R2)


def _peer_address(code: Assembler) -> None:
    """r7 = the peer's address in the record: the remote one, or the local one when there
    is no remote port yet."""
    chosen = code.label()
    code.load(H, R3, R10, field_at("remote_port"))
    code.mov(R7, R10)
    code.alu_imm(ebpf.ADD, R7, field_at("remote_addr"))
    code.jump_imm(ebpf.JNE, R3, 0, chosen)
    code.mov(R7, R10)
    code.alu_imm(ebpf.ADD, R7, field_at("local_addr"))
    code.place(chosen)


def _mark_ipv4(code: Assembler) -> None:
    """An AF_INET6 socket whose peer's address is IPv4-mapped (a dual-stack socket talking
    IPv4) is reported as WinDivert's _V4 layers report it: IPv6 bit 0, and a local address
    of :: as ::ffff:0.0.0.0 (IPv4 0.0.0.0). Both addresses must be IPv4-mapped or ::."""
    keep = code.label()
    code.load(B, R2, R10, field_at("ipv6"))
    code.jump_imm(ebpf.JEQ, R2, 0, keep)
    _peer_address(code)
    code.load(W, R2, R7, 8)
    code.jump_imm(ebpf.JNE, R2, 0xFFFF, keep)                      # not IPv4-mapped (words 0 and 1 below)
    for field in ("local_addr", "remote_addr"):
        mapped = code.label()
        code.load(W, R2, R10, field_at(field))
        code.load(W, R3, R10, field_at(field) + 4)
        code.emit(ebpf.ALU64 | ebpf.OR | ebpf.X, R2, R3)
        code.jump_imm(ebpf.JNE, R2, 0, keep)
        code.load(W, R2, R10, field_at(field) + 8)
        code.jump_imm(ebpf.JEQ, R2, 0xFFFF, mapped)
        code.jump_imm(ebpf.JNE, R2, 0, keep)
        code.load(W, R2, R10, field_at(field) + 12)
        code.jump_imm(ebpf.JNE, R2, 0, keep)                        # neither IPv4-mapped nor ::
        code.place(mapped)
    code.store_imm(B, R10, field_at("ipv6"), 0)
    code.store_imm(W, R10, field_at("local_addr") + 8, 0xFFFF)
    code.place(keep)


def _mark_loopback(code: Assembler) -> None:
    """loopback = the peer's address is 127.0.0.0/8, ::ffff:127.0.0.0/104 or ::1."""
    v6, yes, no = (code.label() for _ in range(3))
    _peer_address(code)
    code.load(W, R2, R7, 0)
    code.jump_imm(ebpf.JNE, R2, 0, no)
    code.load(W, R2, R7, 4)
    code.jump_imm(ebpf.JNE, R2, 0, no)
    code.load(W, R2, R7, 8)
    code.jump_imm(ebpf.JEQ, R2, 0, v6)
    code.jump_imm(ebpf.JNE, R2, 0xFFFF, no)
    code.load(W, R2, R7, 12)
    code.alu_imm(ebpf.RSH, R2, 24)
    code.jump_imm(ebpf.JEQ, R2, 127, yes)
    code.goto(no)
    code.place(v6)
    code.load(W, R2, R7, 12)
    code.jump_imm(ebpf.JNE, R2, 1, no)
    code.place(yes)
    code.store_imm(B, R10, field_at("loopback"), 1)
    code.place(no)


def _remember_local(code: Assembler, maps: Maps) -> None:
    """locals[this socket's cookie] = the record's local address and port."""
    for i in range(0, 16, 4):
        code.load(W, R2, R10, field_at("local_addr") + i)
        code.store(W, R10, VALUE + i, R2)
    code.load(H, R2, R10, field_at("local_port"))
    code.store(DW, R10, VALUE + 16, R2)
    code.load(DW, R2, R10, field_at("endpoint_id"))
    code.store(DW, R10, KEY, R2)
    update(code, maps.locals)


def finish(code: Assembler, tree: Node, maps: Maps, block: bool, remember: bool = False) -> None:
    """Filter, report, and return the verdict; `remember` keeps the local address
    of an operation that is let through, for its CLOSE."""
    _mark_ipv4(code)
    _mark_loopback(code)
    match, miss = code.label(), code.label()
    compile_filter(code, tree, match, miss)
    # The verifier refuses unreachable code: a constant filter has one path only.
    if tree != Const(False):
        code.place(match)
        _matched(code, maps, block, remember and not block)
    if tree != Const(True):
        code.place(miss)
        if remember:
            _remember_local(code, maps)
        code.mov_imm(R0, 1)
        code.exit()


def _matched(code: Assembler, maps: Maps, block: bool, remember: bool) -> None:
    if remember:
        _remember_local(code, maps)
    code.store_imm(B, R10, field_at("blocked"), int(block))
    code.load_map(R1, maps.events)
    code.mov(R2, R10)
    code.alu_imm(ebpf.ADD, R2, RECORD)
    code.mov_imm(R3, SIZE)
    code.mov_imm(R4, 0)
    code.call(ebpf.RINGBUF_OUTPUT)                                  # a full buffer loses the event, not the operation
    code.mov_imm(R0, 0 if block else 1)
    code.exit()


def lookup(code: Assembler, map_fd: int, found, missing) -> None:
    """r0 = map[*KEY] (a pointer) -> found, or -> missing."""
    code.load_map(R1, map_fd)
    code.mov(R2, R10)
    code.alu_imm(ebpf.ADD, R2, KEY)
    code.call(MAP_LOOKUP)
    code.jump_imm(ebpf.JEQ, R0, 0, missing)
    code.goto(found)


def update(code: Assembler, map_fd: int) -> None:
    """map[*KEY] = *VALUE."""
    code.load_map(R1, map_fd)
    code.mov(R2, R10)
    code.alu_imm(ebpf.ADD, R2, KEY)
    code.mov(R3, R10)
    code.alu_imm(ebpf.ADD, R3, VALUE)
    code.mov_imm(R4, 0)
    code.call(MAP_UPDATE)


def sock_create(maps: Maps) -> Program:
    code = Assembler()
    code.mov(R6, R1)
    code.call(ebpf.GET_SOCKET_COOKIE)
    code.store(DW, R10, KEY, R0)
    code.call(ebpf.GET_CURRENT_PID_TGID)
    code.alu_imm(ebpf.RSH, R0, 32)                                  # the creating process's id ...
    code.store(DW, R10, VALUE, R0)
    current_name(code, VALUE + 8)                                   # ... and name
    update(code, maps.owners)
    code.mov_imm(R0, 1)
    code.exit()
    return Program("divert_create", sys_bpf.PROG_TYPE_CGROUP_SOCK, sys_bpf.ATTACH_INET_SOCK_CREATE, None,
                   code.assemble())


def sock_addr(tree: Node, maps: Maps, event: Event, ipv6: bool, block: bool) -> Program:
    """bind4/6 or connect4/6."""
    code = Assembler()
    begin_record(code, event, outbound=True)
    _current_process(code)
    code.store_imm(B, R10, field_at("ipv6"), int(ipv6))
    code.load(W, R2, R6, SOCK_ADDR["protocol"])
    code.store(B, R10, field_at("protocol"), R2)
    asked = "local" if event == Event.SOCKET_BIND else "remote"
    if ipv6:
        _copy_ipv6(code, R6, SOCK_ADDR["user_ip6"], f"{asked}_addr")
    else:
        _copy_ipv4(code, R6, SOCK_ADDR["user_ip4"], f"{asked}_addr")
    _copy_port(code, R6, SOCK_ADDR["user_port"], f"{asked}_port", network_order=True)
    if event == Event.SOCKET_CONNECT:
        code.load(DW, R7, R6, SOCK_ADDR["sk"])                      # r7 = the socket, for what it has bound
        if ipv6:
            _copy_ipv6(code, R7, SOCK["src_ip6"], "local_addr")
        else:
            _copy_ipv4(code, R7, SOCK["src_ip4"], "local_addr")
        _copy_port(code, R7, SOCK["src_port"], "local_port", network_order=False)
    finish(code, tree, maps, block, remember=event == Event.SOCKET_BIND)
    kind = ("bind" if event == Event.SOCKET_BIND else "connect") + ("6" if ipv6 else "4")
    attach = {"bind4": sys_bpf.ATTACH_INET4_BIND, "bind6": sys_bpf.ATTACH_INET6_BIND,
              "connect4": sys_bpf.ATTACH_INET4_CONNECT, "connect6": sys_bpf.ATTACH_INET6_CONNECT}[kind]
    return Program(f"divert_{kind}", sys_bpf.PROG_TYPE_CGROUP_SOCK_ADDR, attach, event, code.assemble())


def _endpoints(code: Assembler, base: int, offsets: dict, local: str | None, remote: str | None) -> None:
    """Addresses from a context that holds both families, by its family field."""
    v6, done = code.label(), code.label()
    code.load(W, R2, base, offsets["family"])
    code.jump_imm(ebpf.JEQ, R2, AF_INET6, v6)
    if local:
        _copy_ipv4(code, base, offsets[f"{local}_ip4"], "local_addr")
    if remote:
        _copy_ipv4(code, base, offsets[f"{remote}_ip4"], "remote_addr")
    code.goto(done)
    code.place(v6)
    code.store_imm(B, R10, field_at("ipv6"), 1)
    if local:
        _copy_ipv6(code, base, offsets[f"{local}_ip6"], "local_addr")
    if remote:
        _copy_ipv6(code, base, offsets[f"{remote}_ip6"], "remote_addr")
    code.place(done)


def listener_key(code: Assembler) -> None:
    """*KEY = family << 16 | local port, from the sock_ops context in r6."""
    code.load(W, R2, R6, SOCK_OPS["family"])
    code.alu_imm(ebpf.LSH, R2, 16)
    code.load(W, R3, R6, SOCK_OPS["local_port"])
    code.emit(ebpf.ALU64 | ebpf.OR | ebpf.X, R2, R3)
    code.store(DW, R10, KEY, R2)


def owner_of(code: Assembler, maps: Maps, cookie_field: str) -> None:
    """The record's process and its name = owners[the record's `cookie_field`], when known."""
    found, missing = code.label(), code.label()
    code.load(DW, R2, R10, field_at(cookie_field))
    code.store(DW, R10, KEY, R2)
    lookup(code, maps.owners, found, missing)
    code.place(found)
    code.load(W, R2, R0, 0)
    code.store(W, R10, field_at("process_id"), R2)
    for i in range(0, COMM_SIZE, 8):
        code.load(DW, R2, R0, 8 + i)
        code.store(DW, R10, field_at("process_name") + i, R2)
    code.place(missing)


def inherit_listener(code: Assembler, maps: Maps) -> None:
    """An accepted socket's listener (listeners map) becomes the record's parent endpoint,
    and the listener's process the record's and, from now on, the socket's (owners map)."""
    parent, done = code.label(), code.label()
    listener_key(code)
    lookup(code, maps.listeners, parent, done)
    code.place(parent)
    code.load(DW, R2, R0, 0)
    code.store(DW, R10, field_at("parent_endpoint_id"), R2)
    owner_of(code, maps, "parent_endpoint_id")
    code.load(W, R2, R10, field_at("process_id"))
    code.store(DW, R10, VALUE, R2)
    for i in range(0, COMM_SIZE, 8):
        code.load(DW, R2, R10, field_at("process_name") + i)
        code.store(DW, R10, VALUE + 8 + i, R2)
    code.load(DW, R2, R10, field_at("endpoint_id"))
    code.store(DW, R10, KEY, R2)
    update(code, maps.owners)
    code.place(done)


def dispatch_sock_ops(code: Assembler, *ops: int) -> list:
    """A label for each callback in `ops`, jumped to by the context's op; any other returns."""
    labels = [code.label() for _ in ops]
    code.load(W, R2, R1, SOCK_OPS["op"])
    for op, label in zip(ops, labels):
        code.jump_imm(ebpf.JEQ, R2, op, label)
    code.mov_imm(R0, 1)
    code.exit()
    return labels


def sock_ops(tree: Node, maps: Maps) -> Program:
    """LISTEN and ACCEPT (TCP only); neither can be refused from here."""
    code = Assembler()
    listen, accept, connect = dispatch_sock_ops(code, SOCK_OPS_LISTEN, SOCK_OPS_PASSIVE_ESTABLISHED,
                                                SOCK_OPS_CONNECT)

    code.place(connect)                                             # the port connect() was given
    begin_record(code, Event.SOCKET_CONNECT, outbound=True)
    sock_ops_endpoints(code, remote=False)
    _remember_local(code, maps)
    code.mov_imm(R0, 1)
    code.exit()

    code.place(listen)
    begin_record(code, Event.SOCKET_LISTEN, outbound=True)
    sock_ops_endpoints(code, remote=False)
    owner_of(code, maps, "endpoint_id")
    listener_key(code)
    code.load(DW, R2, R10, field_at("endpoint_id"))
    code.store(DW, R10, VALUE, R2)
    update(code, maps.listeners)                                   # this port's listener, for ACCEPT
    finish(code, tree, maps, block=False, remember=True)

    code.place(accept)
    begin_record(code, Event.SOCKET_ACCEPT, outbound=False)
    sock_ops_endpoints(code, remote=True)
    inherit_listener(code, maps)
    finish(code, tree, maps, block=False, remember=True)
    return Program("divert_sockops", sys_bpf.PROG_TYPE_SOCK_OPS, sys_bpf.ATTACH_SOCK_OPS, None, code.assemble())


def sock_ops_endpoints(code: Assembler, remote: bool) -> None:
    code.store_imm(B, R10, field_at("protocol"), IPPROTO_TCP)
    _endpoints(code, R6, SOCK_OPS, "local", "remote" if remote else None)
    _copy_port(code, R6, SOCK_OPS["local_port"], "local_port", network_order=False)
    if remote:
        # sock_ops gives the remote port in network order in the upper half.
        code.load(W, R2, R6, SOCK_OPS["remote_port"])
        code.alu_imm(ebpf.RSH, R2, 16)
        code.swap(R2, 16)
        code.store(H, R10, field_at("remote_port"), R2)


def udp_send(maps: Maps, ipv6: bool) -> Program:
    """Remembers a UDP socket's local address as a datagram leaves, once it has a port."""
    code = Assembler()
    begin_record(code, Event.SOCKET_CLOSE, outbound=True)
    known, unknown = code.label(), code.label()
    code.load(DW, R2, R10, field_at("endpoint_id"))
    code.store(DW, R10, KEY, R2)
    lookup(code, maps.locals, known, unknown)
    code.place(known)
    code.load(H, R2, R0, 16)
    code.jump_imm(ebpf.JEQ, R2, 0, unknown)                         # remembered before it had a port
    code.mov_imm(R0, 1)
    code.exit()
    code.place(unknown)
    code.load(DW, R7, R6, SOCK_ADDR["sk"])                          # r7 = the socket, bound by now
    _endpoints(code, R7, SOCK, "src", None)
    _copy_port(code, R7, SOCK["src_port"], "local_port", network_order=False)
    _remember_local(code, maps)
    code.mov_imm(R0, 1)                                             # the datagram is never refused here
    code.exit()
    kind = "sendmsg6" if ipv6 else "sendmsg4"
    return Program(f"divert_{kind}", sys_bpf.PROG_TYPE_CGROUP_SOCK_ADDR,
                   sys_bpf.ATTACH_UDP6_SENDMSG if ipv6 else sys_bpf.ATTACH_UDP4_SENDMSG, None, code.assemble())


def udp_egress(maps: Maps) -> Program:
    """Remembers a UDP socket's local address and port as a datagram leaves, when they are not
    those remembered: connect() chooses them after its hook has run."""
    code = Assembler()
    done, known, changed = code.label(), code.label(), code.label()
    code.mov(R6, R1)
    code.load(DW, R1, R6, SKB_SK)
    code.jump_imm(ebpf.JEQ, R1, 0, done)
    code.call(ebpf.SK_FULLSOCK)
    code.jump_imm(ebpf.JEQ, R0, 0, done)
    code.mov(R7, R0)                                                # r7 = the sending socket
    code.load(W, R2, R7, SOCK["protocol"])
    code.jump_imm(ebpf.JNE, R2, IPPROTO_UDP, done)
    for offset in range(0, 16, 8):
        code.store_imm(DW, R10, field_at("local_addr") + offset, 0)
    _endpoints(code, R7, SOCK, "src", None)
    _copy_port(code, R7, SOCK["src_port"], "local_port", network_order=False)
    code.mov(R1, R6)
    code.call(ebpf.GET_SOCKET_COOKIE)
    code.store(DW, R10, field_at("endpoint_id"), R0)
    code.store(DW, R10, KEY, R0)
    lookup(code, maps.locals, known, changed)
    code.place(known)                                               # unchanged: nothing to write
    code.load(H, R2, R0, 16)
    code.load(H, R3, R10, field_at("local_port"))
    code.jump_reg(ebpf.JNE, R2, R3, changed)
    for i in range(0, 16, 4):
        code.load(W, R2, R0, i)
        code.load(W, R3, R10, field_at("local_addr") + i)
        code.jump_reg(ebpf.JNE, R2, R3, changed)
    code.goto(done)
    code.place(changed)
    _remember_local(code, maps)
    code.place(done)
    code.mov_imm(R0, 1)                                             # the datagram always passes
    code.exit()
    return Program("divert_udp_local", sys_bpf.PROG_TYPE_CGROUP_SKB, sys_bpf.ATTACH_INET_EGRESS, None,
                   code.assemble())


def sock_release(tree: Node, maps: Maps) -> Program:
    code = Assembler()
    begin_record(code, Event.SOCKET_CLOSE, outbound=True)
    _current_process(code)
    code.load(W, R2, R6, SOCK["protocol"])
    code.store(B, R10, field_at("protocol"), R2)
    _endpoints(code, R6, SOCK, None, "dst")
    _copy_port(code, R6, SOCK["dst_port"], "remote_port", network_order=True)
    known, unknown = code.label(), code.label()
    code.load(DW, R2, R10, field_at("endpoint_id"))
    code.store(DW, R10, KEY, R2)
    lookup(code, maps.locals, known, unknown)
    code.place(known)                                               # the local address another program saw
    for i in range(0, 16, 4):
        code.load(W, R2, R0, i)
        code.store(W, R10, field_at("local_addr") + i, R2)
    code.load(H, R2, R0, 16)
    code.store(H, R10, field_at("local_port"), R2)
    for map_fd in (maps.locals, maps.owners):
        code.load_map(R1, map_fd)
        code.mov(R2, R10)
        code.alu_imm(ebpf.ADD, R2, KEY)
        code.call(MAP_DELETE)
    code.place(unknown)
    had_port = code.label()
    code.load(H, R2, R10, field_at("local_port"))
    code.load(H, R3, R10, field_at("remote_port"))
    code.emit(ebpf.ALU64 | ebpf.OR | ebpf.X, R2, R3)
    code.jump_imm(ebpf.JNE, R2, 0, had_port)                         # a socket that never had a port: no CLOSE
    code.mov_imm(R0, 1)
    code.exit()
    code.place(had_port)
    finish(code, tree, maps, block=False)
    return Program("divert_release", sys_bpf.PROG_TYPE_CGROUP_SOCK, sys_bpf.ATTACH_INET_SOCK_RELEASE,
                   Event.SOCKET_CLOSE, code.assemble())
