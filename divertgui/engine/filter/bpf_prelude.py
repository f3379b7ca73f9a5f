"""The opening of every kernel program that reads transport fields: it finds
the transport header the way headers.parse_headers does and leaves its
offset in X, its protocol and the bytes after the IP headers in scratch
memory.

IPv6 extension headers: one hop-by-hop header is walked; a packet with other
or more extension headers is accepted whole.
"""

from __future__ import annotations

from .ast import And, Cond, Node, Or, Test
from .bpf import (ABS, ADD, ALU, B, H, IMM, IND, JEQ, JGE, JGT, JMP, JSET, K, LD, LDX, LEN, LSH, MEM, MISC, MSH, ST,
                  SUB, TAX, TXA, W, X, Assembler, Label)
from ..header_fields import (
    IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, IPV4, IPV6, IPV6_EXTENSION,
    IPV6_EXTENSION_HEADERS, IPV6_HEADER_LEN, TCP, TCP_HEADER_MIN, TRANSPORT_HEADER_MIN,
)
from .kernel_fields import TRANSPORT

T_SLOT, REMAINING_SLOT, END_SLOT = 0, 1, 2  # scratch memory: transport protocol, bytes after the IP headers, IP end
_IPV6_TRANSPORTS = (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6)


def reads_transport(tree: Node, version: int) -> set[int]:
    """Transport protocols whose presence the program must establish (-1: none,
    but IPv6's extension headers matter)."""
    protocols: set[int] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (And, Or)):
            stack += [node.left, node.right]
        elif isinstance(node, Cond):
            stack += [node.test, node.then, node.otherwise]
        elif isinstance(node, Test):
            head = node.field.split(".")[0]
            if head in TRANSPORT:
                protocols.add(TRANSPORT[head])
            elif node.field in ("_sport", "_dport"):
                protocols.update(TRANSPORT.values())
            elif node.field in ("protocol", "fragment") and version == 6:
                protocols.add(-1)  # no transport needed, but IPv6's layout is
    return protocols


def prelude(code: Assembler, version: int, protocols: set[int], accept: Label) -> None:
    """Sets X to the transport offset and M[T_SLOT] to the transport protocol
    (0 when none), deciding exactly as headers.parse_headers does; IPv6
    packets with extension headers beyond one hop-by-hop header jump to `accept`."""
    reads_protocol = -1 in protocols
    protocols = {p for p in protocols
                 if p > 0 and (p != IPPROTO_ICMP or version == 4) and (p != IPPROTO_ICMPV6 or version == 6)}
    # e = min(IP length, bytes present); remaining = e - header length.
    code.op(LDX | W | LEN)
    code.op(LD | H | ABS, IPV4["length"].offset if version == 4 else IPV6["length"].offset)
    if version == 6:
        code.op(ALU | ADD | K, IPV6_HEADER_LEN)
    shorter, keep = code.label(), code.label()
    code.jump(JMP | JGT | X, 0, shorter, keep)
    code.place(shorter)
    code.op(MISC | TXA)
    code.place(keep)
    none, store = code.label(), code.label()
    branches = {protocol: code.label() for protocol in sorted(protocols)}
    if version == 4:
        code.op(LDX | B | MSH, 0)
        code.op(ALU | SUB | X)
        code.op(ST, REMAINING_SLOT)
        whole = code.label()
        code.op(LD | H | ABS, IPV4["frag_offset"].offset)
        code.jump(JMP | JSET | K, IPV4["frag_offset"].mask, none, whole)
        code.place(whole)
        code.op(LD | B | ABS, IPV4["protocol"].offset)
        _dispatch(code, branches, none)
    else:
        code.op(ST, END_SLOT)
        code.op(ALU | SUB | K, IPV6_HEADER_LEN)
        code.op(ST, REMAINING_SLOT)
        code.op(LDX | IMM, IPV6_HEADER_LEN)
        code.op(LD | B | ABS, IPV6["next_hdr"].offset)
        hop = code.label()
        for protocol, target in branches.items():
            following = code.label()
            code.jump(JMP | JEQ | K, protocol, target, following)
            code.place(following)
        if not reads_protocol:
            # One hop-by-hop header (MLD, router alerts) is common enough to walk.
            following = code.label()
            code.jump(JMP | JEQ | K, IPPROTO_HOPOPTS, hop, following)
            code.place(following)
        # Other next headers: an extension header (the transport may follow
        # it: accept) or none (no transport). Telling them apart costs more
        # instructions than the rare packet without transport costs here.
        for protocol in _IPV6_TRANSPORTS:
            if protocol not in branches:
                following = code.label()
                code.jump(JMP | JEQ | K, protocol, none, following)
                code.place(following)
        code.goto(accept)
        if not reads_protocol:
            code.place(hop)
            code.op(LD | MEM, REMAINING_SLOT)
            room, fits = code.label(), code.label()
            add, unit = IPV6_EXTENSION_HEADERS[IPPROTO_HOPOPTS]
            code.jump(JMP | JGE | K, add * unit, room, accept)
            code.place(room)
            code.op(LD | B | ABS, IPV6_HEADER_LEN + IPV6_EXTENSION["hdr_ext_len"].offset)
            code.op(ALU | ADD | K, add)
            code.op(ALU | LSH | K, unit.bit_length() - 1)
            code.op(ALU | ADD | K, IPV6_HEADER_LEN)
            code.op(MISC | TAX)
            code.op(LD | MEM, END_SLOT)
            code.jump(JMP | JGE | X, 0, fits, accept)
            code.place(fits)
            code.op(ALU | SUB | X)
            code.op(ST, REMAINING_SLOT)
            code.op(LD | B | ABS, IPV6_HEADER_LEN + IPV6_EXTENSION["next_hdr"].offset)
            for protocol in _IPV6_TRANSPORTS:
                following = code.label()
                code.jump(JMP | JEQ | K, protocol, branches.get(protocol, none), following)
                code.place(following)
            code.goto(accept)
    for protocol, target in branches.items():
        code.place(target)
        code.op(LD | MEM, REMAINING_SLOT)
        found = code.label()
        if protocol == IPPROTO_TCP:
            long_enough = code.label()
            code.jump(JMP | JGE | K, TCP_HEADER_MIN, long_enough, none)
            code.place(long_enough)
            code.op(LD | B | IND, TCP["hdr_len"].offset)
            code.jump(JMP | JGE | K, TCP_HEADER_MIN // 4 << TCP["hdr_len"].shift, found, none)
        else:
            code.jump(JMP | JGE | K, TRANSPORT_HEADER_MIN[protocol], found, none)
        code.place(found)
        code.op(LD | IMM, protocol)
        code.goto(store)
    code.place(none)
    code.op(LD | IMM, 0)
    code.place(store)
    code.op(ST, T_SLOT)


def _dispatch(code: Assembler, branches: dict, otherwise: Label) -> None:
    for protocol, target in branches.items():
        following = code.label()
        code.jump(JMP | JEQ | K, protocol, target, following)
        code.place(following)
    code.goto(otherwise)
