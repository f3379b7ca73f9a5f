"""The FLOW layer's eBPF programs for UDP: a flow begins with its first datagram, ends with its socket.

WinDivert's UDP flow is implicit: "created by the first sent/received
packet". Linux has no such object, so the programs make one from the
datagrams a socket sends and receives:

    cgroup_skb/egress    ESTABLISHED, outbound: the first datagram a socket sends to a peer
    cgroup_skb/ingress   ESTABLISHED, inbound: the first datagram a socket receives from a peer
    cgroup/sock_release  (no event) the socket closed: user space reports each of its flows
                         deleted (socket_layer.FlowBackend)

Both packet programs read the IP header and the ports from the datagram,
so the 5-tuple is the one on the wire (the local address the route chose,
not a wildcard the socket is bound to). A flow is the socket's cookie with
the 5-tuple; the seen map (LRU) holds those already reported, its key the
record's bytes from the endpoint id to the remote port, whose fields in
between are still zero or constant when it is looked up. Every datagram
passes: these programs never refuse anything (FLOW handles sniff).

A socket's flows cannot be listed from a sock_release program, so the
record of a flow whose DELETED the handle's filter may want goes to user
space even when its ESTABLISHED does not match (the kernel filter then
also accepts what would match as DELETED), and the flows map marks the
socket, whose close is then reported once.
"""

from __future__ import annotations

from divertgui.engine.address import Event
from divertgui.engine.filter import And, Cond, Const, Node, Or, Test
from divertgui.engine.filter.simplify import and_, cond, constant_result, or_
from divertgui.engine.header_fields import IPPROTO_UDP, IPV4, IPV4_HEADER_LEN, IPV6, IPV6_HEADER_LEN, UDP

from . import bpf_syscall as sys_bpf
from . import ebpf
from .ebpf import B, DW, H, R0, R1, R2, R3, R4, R6, R7, R10, W, Assembler
from .socket_programs import (KEY, MAP_DELETE, MAP_LOOKUP, MAP_UPDATE, SOCK, VALUE, Maps, Program, field_at,
                              finish, lookup, owner_of, update)
from .socket_record import OFFSET, SIZE

PORTS_SIZE = 4                                      # a UDP header's source and destination ports
SKB_PROTOCOL = 16                                   # __sk_buff's protocol: the packet's EtherType
_ETH_P_IP, _ETH_P_IPV6 = (int.from_bytes(ethertype.to_bytes(2, "big"), "little") for ethertype in (0x0800, 0x86DD))
HEADERS = VALUE - 48                                # the datagram's IP header and ports, copied from the packet
SEEN_KEY = field_at("endpoint_id")                  # the seen map's key: the record from here ...
SEEN_KEY_SIZE = OFFSET["remote_port"] + 2 - OFFSET["endpoint_id"]   # ... to the remote port
_V4_PROTOCOL, _V4_SRC, _V4_DST = IPV4["protocol"].offset, IPV4["src_addr"].offset, IPV4["dst_addr"].offset
_V6_NEXT_HDR, _V6_SRC, _V6_DST = IPV6["next_hdr"].offset, IPV6["src_addr"].offset, IPV6["dst_addr"].offset
_SPORT, _DPORT = UDP["src_port"].offset, UDP["dst_port"].offset
assert HEADERS + IPV6_HEADER_LEN + PORTS_SIZE <= VALUE


def as_deleted(tree: Node) -> Node:
    """A filter that accepts an ESTABLISHED record whenever `tree` could accept the same
    flow's DELETED: `event` tests decided for DELETED, `timestamp` tests (a later
    time then) taken as true."""
    if isinstance(tree, And):
        return and_(as_deleted(tree.left), as_deleted(tree.right))
    if isinstance(tree, Or):
        return or_(as_deleted(tree.left), as_deleted(tree.right))
    if isinstance(tree, Cond):
        return cond(as_deleted(tree.test), as_deleted(tree.then), as_deleted(tree.otherwise))
    if isinstance(tree, Test) and tree.field == "event":
        return Const(bool(constant_result(tree.op, tree.value, Event.FLOW_DELETED, Event.FLOW_DELETED)))
    if isinstance(tree, Test) and tree.field == "timestamp":
        return Const(True)
    return tree


def _load_bytes(code: Assembler, offset: int, size: int, to: int, failed, offset_register: int | None = None) -> None:
    """size bytes of the packet from `offset` (or from the offset in `offset_register`) to
    the stack at `to`."""
    code.mov(R1, R6)
    if offset_register is None:
        code.mov_imm(R2, offset)
    else:
        code.mov(R2, offset_register)
    code.mov(R3, R10)
    code.alu_imm(ebpf.ADD, R3, to)
    code.mov_imm(R4, size)
    code.call(ebpf.SKB_LOAD_BYTES)
    code.jump_imm(ebpf.JNE, R0, 0, failed)                          # shorter than that: not ours


def _zero_record(code: Assembler) -> None:
    for offset in range(0, SIZE, 8):
        code.store_imm(DW, R10, field_at("timestamp") + offset, 0)


def _copy_address(code: Assembler, at: int, words: int, field: str) -> None:
    """An address of `words` 32-bit words (network order) from the stack into the record,
    IPv4 as ::ffff:a.b.c.d."""
    first = 4 - words
    if words == 1:
        code.store_imm(W, R10, field_at(field) + 8, 0xFFFF)
    for i in range(words):
        code.load(W, R2, R10, at + 4 * i)
        code.swap(R2, 32)
        code.store(W, R10, field_at(field) + 4 * (first + i), R2)


def _copy_ports(code: Assembler, at: int, outbound: bool) -> None:
    local, remote = (_SPORT, _DPORT) if outbound else (_DPORT, _SPORT)
    for field, offset in (("local_port", local), ("remote_port", remote)):
        code.load(H, R2, R10, at + offset)
        code.swap(R2, 16)
        code.store(H, R10, field_at(field), R2)


def _datagram(code: Assembler, outbound: bool, ignore) -> None:
    """The record's addresses, ports and IP version from an IPv4 or IPv6 UDP datagram
    (r6 = the packet); anything else -> ignore. One copy from the packet in the common
    case: IPv4 without options, IPv6 without extension headers."""
    v4, v6, done, ports_read = code.label(), code.label(), code.label(), code.label()
    code.load(W, R2, R6, SKB_PROTOCOL)                              # the EtherType, in network order
    code.jump_imm(ebpf.JEQ, R2, _ETH_P_IP, v4)
    code.jump_imm(ebpf.JEQ, R2, _ETH_P_IPV6, v6)
    code.goto(ignore)

    source, destination = ("local_addr", "remote_addr") if outbound else ("remote_addr", "local_addr")
    code.place(v4)
    _load_bytes(code, 0, IPV4_HEADER_LEN + PORTS_SIZE, HEADERS, ignore)
    code.load(B, R2, R10, HEADERS + _V4_PROTOCOL)
    code.jump_imm(ebpf.JNE, R2, IPPROTO_UDP, ignore)
    code.load(B, R7, R10, HEADERS)
    code.alu_imm(ebpf.AND, R7, 0x0F)
    code.alu_imm(ebpf.LSH, R7, 2)                                   # r7 = the IPv4 header's length
    code.jump_imm(ebpf.JEQ, R7, IPV4_HEADER_LEN, ports_read)
    _load_bytes(code, 0, PORTS_SIZE, HEADERS + IPV4_HEADER_LEN, ignore, offset_register=R7)   # past its options
    code.place(ports_read)
    _zero_record(code)
    _copy_address(code, HEADERS + _V4_SRC, 1, source)
    _copy_address(code, HEADERS + _V4_DST, 1, destination)
    _copy_ports(code, HEADERS + IPV4_HEADER_LEN, outbound)
    code.goto(done)

    code.place(v6)                                                  # UDP right after the fixed header only
    _load_bytes(code, 0, IPV6_HEADER_LEN + PORTS_SIZE, HEADERS, ignore)
    code.load(B, R2, R10, HEADERS + _V6_NEXT_HDR)
    code.jump_imm(ebpf.JNE, R2, IPPROTO_UDP, ignore)
    _zero_record(code)
    code.store_imm(B, R10, field_at("ipv6"), 1)
    _copy_address(code, HEADERS + _V6_SRC, 4, source)
    _copy_address(code, HEADERS + _V6_DST, 4, destination)
    _copy_ports(code, HEADERS + IPV6_HEADER_LEN, outbound)
    code.place(done)


def udp_flows(tree: Node, maps: Maps, outbound: bool, track: bool) -> Program:
    """cgroup_skb/egress (outbound) or ingress: ESTABLISHED at a flow's first datagram;
    `track`: the handle may want the flow's DELETED."""
    code = Assembler()
    ignore = code.label()
    code.mov(R6, R1)
    _datagram(code, outbound, ignore)
    code.store_imm(W, R10, field_at("event"), int(Event.FLOW_ESTABLISHED))
    code.mov(R1, R6)
    code.call(ebpf.GET_SOCKET_COOKIE)                               # the socket the datagram belongs to
    code.store(DW, R10, field_at("endpoint_id"), R0)
    code.load_map(R1, maps.seen)
    code.mov(R2, R10)
    code.alu_imm(ebpf.ADD, R2, SEEN_KEY)
    code.call(MAP_LOOKUP)
    code.jump_imm(ebpf.JNE, R0, 0, ignore)                          # a flow already reported
    code.store_imm(DW, R10, VALUE, 0)
    code.load_map(R1, maps.seen)
    code.mov(R2, R10)
    code.alu_imm(ebpf.ADD, R2, SEEN_KEY)
    code.mov(R3, R10)
    code.alu_imm(ebpf.ADD, R3, VALUE)
    code.mov_imm(R4, 0)
    code.call(MAP_UPDATE)                                           # reported from now on

    code.call(ebpf.KTIME_GET_NS)
    code.store(DW, R10, field_at("timestamp"), R0)
    code.store_imm(B, R10, field_at("protocol"), IPPROTO_UDP)
    code.store_imm(B, R10, field_at("outbound"), int(outbound))
    owner_of(code, maps, "endpoint_id")                             # the process that created the socket
    if track:
        code.store_imm(DW, R10, VALUE, int(outbound))               # KEY still holds the cookie
        code.store_imm(DW, R10, VALUE + 8, 0)
        update(code, maps.flows)                                    # its close will be reported
        tree = or_(tree, as_deleted(tree))
    finish(code, tree, maps, block=False)
    code.place(ignore)
    code.mov_imm(R0, 1)                                             # let the datagram through
    code.exit()
    kind = "out" if outbound else "in"
    return Program(f"divert_udp_{kind}", sys_bpf.PROG_TYPE_CGROUP_SKB,
                   sys_bpf.ATTACH_INET_EGRESS if outbound else sys_bpf.ATTACH_INET_INGRESS, None, code.assemble())


def udp_socket_release(maps: Maps) -> Program:
    """cgroup/sock_release: a UDP socket with reported flows closed (socket_record.socket_closed)."""
    code = Assembler()
    ignore, known = code.label(), code.label()
    code.mov(R6, R1)
    code.load(W, R2, R6, SOCK["protocol"])
    code.jump_imm(ebpf.JNE, R2, IPPROTO_UDP, ignore)
    code.mov(R1, R6)
    code.call(ebpf.GET_SOCKET_COOKIE)
    code.store(DW, R10, KEY, R0)
    lookup(code, maps.flows, known, ignore)                         # a socket with no flow this handle saw
    code.place(known)
    code.load_map(R1, maps.flows)
    code.mov(R2, R10)
    code.alu_imm(ebpf.ADD, R2, KEY)
    code.call(MAP_DELETE)
    _zero_record(code)
    code.load(DW, R2, R10, KEY)
    code.store(DW, R10, field_at("endpoint_id"), R2)
    code.call(ebpf.KTIME_GET_NS)
    code.store(DW, R10, field_at("timestamp"), R0)
    code.store_imm(W, R10, field_at("event"), int(Event.FLOW_DELETED))
    code.store_imm(B, R10, field_at("protocol"), IPPROTO_UDP)
    code.store_imm(B, R10, field_at("socket_closed"), 1)
    code.load_map(R1, maps.events)
    code.mov(R2, R10)
    code.alu_imm(ebpf.ADD, R2, field_at("timestamp"))
    code.mov_imm(R3, SIZE)
    code.mov_imm(R4, 0)
    code.call(ebpf.RINGBUF_OUTPUT)
    code.place(ignore)
    code.mov_imm(R0, 1)
    code.exit()
    return Program("divert_udp_close", sys_bpf.PROG_TYPE_CGROUP_SOCK, sys_bpf.ATTACH_INET_SOCK_RELEASE, None,
                   code.assemble())
