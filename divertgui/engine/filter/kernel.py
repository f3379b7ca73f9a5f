"""The kernel prefilter: what netfilter can test of a filter, as one classic
BPF program for the xt_bpf match (`-m bpf --bytecode`), per IP version.

    kernel_test(filter, version, hook=None) -> KernelTest(match, exact)
    kernel_match_for(filter, layer) -> KernelMatch      ((version, hook) -> match)
    kernel_exactness(filter, layer) -> {4: bool, 6: bool}

Direction is exact when the hook is known (INPUT: inbound, OUTPUT:
outbound, where `loopback` becomes `-o lo`).

The program is a superset of the filter: every packet the filter accepts,
it accepts. What the kernel cannot see the way user space sees it becomes
"unknown" and counts as true (the test's header-presence guard is kept):

- address fields (timestamp, ifIdx, loopback; direction unless the hook is
  given) are not in the packet;
- NFQUEUE hands user space GSO/GRO super-packets cut into segments, so the
  fields that differ between a super-packet and its segments (lengths, IP
  id and checksum, TCP sequence, FIN/PSH/URG, window, checksums, payload
  bytes) are unknown; `length >` and `length >=` stay, as supersets only,
  since a super-packet is never shorter than its segments;
- IPv6 extension headers: one hop-by-hop header is walked; a packet with
  other or more extension headers is accepted whole when the filter reads
  transport fields.

`exact` speaks of packets as a netfilter hook holds them: parsable, with an
IP length equal to the bytes present (the kernel trims or drops others).

xt_bpf takes at most 64 instructions: a longer program is cut by replacing
its deepest subtrees with "unknown" until it fits.
"""

from __future__ import annotations

import functools
import os
from typing import Callable, NamedTuple

from ..address import Layer
from .ast import And, Cond, Const, Node, Or, Test
from .fields import FIELDS, IPV4_MAPPED_LO
from .simplify import constant_result

try:  # the one shape both sides agree on
    from ..backends.netfilter_rules import KernelTest
except ImportError:  # pragma: no cover - netfilter_rules is Linux-side only
    class KernelTest(NamedTuple):
        match: str | None
        exact: bool

MAX_INSTRUCTIONS = 64          # XT_BPF_MAX_NUM_INSTR
INJECTED_MARK = 0x00000400     # netfilter_rules.INJECTED_MARK
ACCEPT_VALUE = 0xFFFF

# Classic BPF opcodes (linux/filter.h).
LD, LDX, ST, ALU, JMP, RET, MISC = 0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x07
W, H, B = 0x00, 0x08, 0x10
IMM, ABS, IND, MEM, LEN, MSH = 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0
ADD, SUB, AND_, LSH, RSH = 0x00, 0x10, 0x50, 0x60, 0x70
JA, JEQ, JGT, JGE, JSET = 0x00, 0x10, 0x20, 0x30, 0x40
K, X = 0x00, 0x08
TAX, TXA = 0x00, 0x80
SKF_AD_MARK = 0xFFFFF000 + 20  # SKF_AD_OFF + SKF_AD_MARK

T_SLOT, REMAINING_SLOT, END_SLOT = 0, 1, 2  # scratch memory: transport protocol, bytes after the IP headers, IP end

TRUE, FALSE = Const(True), Const(False)
_TRANSPORT = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}


class Instruction(NamedTuple):
    code: int
    jt: int
    jf: int
    k: int


# -- which fields the kernel sees as user space does --------------------------------

class _Load(NamedTuple):
    """How a field's value is read into A: instructions (code, k), value range,
    and `bit`: a one-bit field tested with jset (0 = compare the value)."""

    steps: tuple
    hi: int
    bit: int = 0
    bias: int = 0      # subtracted from the constant (IPv4-mapped addresses)
    reads_x: bool = False


def _byte(offset, x=False, mask=None, shift=0, hi=0xFF):
    steps = [(LD | B | (IND if x else ABS), offset)]
    if shift:
        steps.append((ALU | RSH | K, shift))
    if mask is not None:
        steps.append((ALU | AND_ | K, mask))
    return _Load(tuple(steps), hi, reads_x=x)


def _half(offset, x=False, mask=None, shift=0, hi=0xFFFF):
    steps = [(LD | H | (IND if x else ABS), offset)]
    if shift:
        steps.append((ALU | RSH | K, shift))
    if mask is not None:
        steps.append((ALU | AND_ | K, mask))
    return _Load(tuple(steps), hi, reads_x=x)


def _flag(code_offset, bit, x=False):
    return _Load(((LD | B | (IND if x else ABS), code_offset),), 1, bit=bit, reads_x=x)


_V4_LOADS = {
    "ip.HdrLength": _byte(0, mask=0x0F, hi=0x0F),
    "ip.TOS": _byte(1),
    "ip.DF": _flag(6, 0x40),
    "ip.MF": _flag(6, 0x20),
    "ip.FragOff": _half(6, mask=0x1FFF, hi=0x1FFF),
    "ip.TTL": _byte(8),
    "ip.Protocol": _byte(9),
    "protocol": _byte(9),
    "ip.SrcAddr": _Load(((LD | W | ABS, 12),), 0xFFFFFFFF, bias=IPV4_MAPPED_LO),
    "ip.DstAddr": _Load(((LD | W | ABS, 16),), 0xFFFFFFFF, bias=IPV4_MAPPED_LO),
    "fragment": _Load(((LD | H | ABS, 6),), 1, bit=0x3FFF),
}
_V6_LOADS = {
    "ipv6.TrafficClass": _half(0, shift=4, mask=0xFF, hi=0xFF),
    "ipv6.FlowLabel": _Load(((LD | W | ABS, 0), (ALU | AND_ | K, 0xFFFFF)), 0xFFFFF),
    "ipv6.NextHdr": _byte(6),
    "ipv6.HopLimit": _byte(7),
    "protocol": _byte(6),
}
_TRANSPORT_LOADS = {
    "icmp.Type": _byte(0, x=True), "icmp.Code": _byte(1, x=True),
    "icmp.Body": _Load(((LD | W | IND, 4),), 0xFFFFFFFF, reads_x=True),
    "tcp.SrcPort": _half(0, x=True), "tcp.DstPort": _half(2, x=True),
    "tcp.AckNum": _Load(((LD | W | IND, 8),), 0xFFFFFFFF, reads_x=True),
    "tcp.HdrLength": _byte(12, x=True, shift=4, hi=0x0F),
    "tcp.Ack": _flag(13, 0x10, x=True), "tcp.Rst": _flag(13, 0x04, x=True), "tcp.Syn": _flag(13, 0x02, x=True),
    "udp.SrcPort": _half(0, x=True), "udp.DstPort": _half(2, x=True),
}
for _name in ("Type", "Code", "Body"):
    _TRANSPORT_LOADS[f"icmpv6.{_name}"] = _TRANSPORT_LOADS[f"icmp.{_name}"]
_IMPOSTOR = _Load(((LD | W | ABS, SKF_AD_MARK),), 1, bit=INJECTED_MARK)

# Bytes of the fixed IP header that are the same in a super-packet and in its segments.
_STABLE_BYTES = {4: set(range(0, 2)) | set(range(6, 10)) | set(range(12, 20)),
                 6: set(range(0, 4)) | set(range(6, 40))}
# Fields whose value user space gets from a segment, not from what the rule saw.
_UNKNOWN = frozenset({
    "timestamp", "random8", "random16", "random32", "ifIdx",
    "ip.Length", "ip.Id", "ip.Checksum", "ipv6.Length", "icmp.Checksum", "icmpv6.Checksum",
    "tcp.SeqNum", "tcp.Urg", "tcp.Psh", "tcp.Fin", "tcp.Window", "tcp.Checksum", "tcp.UrgPtr",
    "tcp.PayloadLength", "udp.Length", "udp.Checksum", "udp.PayloadLength",
    "tcp.Payload", "tcp.Payload16", "tcp.Payload32", "udp.Payload", "udp.Payload16", "udp.Payload32",
})
_PORTS = {"localPort", "remotePort"}
_ADDRESSES = {"localAddr", "remoteAddr"}


def _compare(op: str, a: int, b: int) -> bool:
    return {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


# -- over-approximation ------------------------------------------------------------

class _Context(NamedTuple):
    version: int
    hook: str | None      # "I", "O", "P", "F" or None when one match serves several hooks


def _presence(field: str, version: int) -> Node:
    """The test `field != 0` for a presence field, folded for the version."""
    if field == "ip":
        return TRUE if version == 4 else FALSE
    if field == "ipv6":
        return TRUE if version == 6 else FALSE
    if (field == "icmp" and version == 6) or (field == "icmpv6" and version == 4):
        return FALSE
    return Test(field, "!=", 0)


def _guard(field: str, version: int) -> Node:
    guard = FIELDS[field].guard if field in FIELDS else None
    return TRUE if guard is None else _presence(guard, version)


def _constant(field: str, ctx: _Context) -> int | None:
    if field in ("zero", "event", "subIfIdx"):
        return 0
    if field in ("ip", "ipv6"):
        return int((field == "ipv6") == (ctx.version == 6))
    if (field == "icmp" and ctx.version == 6) or (field == "icmpv6" and ctx.version == 4):
        return 0
    if ctx.hook is not None and field in ("outbound", "inbound"):
        return int((ctx.hook == "O") == (field == "outbound"))
    if ctx.hook in ("I", "P") and field == "loopback":
        return 0  # loopback packets are diverted on the outbound path only
    return None


def _approximate_test(node: Test, ctx: _Context) -> tuple[Node, bool]:
    field, version = node.field, ctx.version
    guard = _guard(field, version)
    if guard == FALSE:
        return FALSE, True
    constant = _constant(field, ctx)
    if constant is not None:
        return (TRUE if _compare(node.op, constant, node.value) else FALSE), True
    if field in _ADDRESSES or field in _PORTS:
        return _endpoint(node, ctx)
    if node.index is not None:
        return _index(node, ctx)
    if field == "length":
        # Sound as a superset only: a short last segment of a long super-packet
        # passes the kernel's test and fails the exact one.
        return (node if node.op in (">", ">=") else guard), False
    if field in _UNKNOWN or field in ("outbound", "inbound", "loopback"):
        return guard, False
    if field in _TRANSPORT or field in ("impostor", "fragment", "ipv6.SrcAddr", "ipv6.DstAddr") \
            or _load(field, version) is not None:
        return node, True
    return guard, False


def _endpoint(node: Test, ctx: _Context) -> tuple[Node, bool]:
    """localAddr/Port and remoteAddr/Port: source or destination by direction."""
    is_port = node.field in _PORTS
    local = node.field.startswith("local")
    if ctx.version == 4:
        src, dst = ("_sport", "_dport") if is_port else ("ip.SrcAddr", "ip.DstAddr")
    else:
        src, dst = ("_sport", "_dport") if is_port else ("ipv6.SrcAddr", "ipv6.DstAddr")
    source, destination = Test(src, node.op, node.value), Test(dst, node.op, node.value)
    if ctx.hook == "O":
        return (source if local else destination), True
    if ctx.hook in ("I", "P"):
        return (destination if local else source), True
    return Or(source, destination), False


def _index(node: Test, ctx: _Context) -> tuple[Node, bool]:
    guard = _guard(node.field, ctx.version)
    size = FIELDS[node.field].index_size
    if node.field.startswith("packet") and node.index >= 0 and \
            set(range(node.index, node.index + size)) <= _STABLE_BYTES[ctx.version]:
        return node, True
    return guard, False


def _simplify(node: Node) -> Node:
    if isinstance(node, And):
        if FALSE in (node.left, node.right):
            return FALSE
        if node.left == TRUE:
            return node.right
        return node.left if node.right == TRUE else node
    if isinstance(node, Or):
        if TRUE in (node.left, node.right):
            return TRUE
        if node.left == FALSE:
            return node.right
        return node.left if node.right == FALSE else node
    if isinstance(node, Cond):
        if isinstance(node.test, Const):
            return node.then if node.test.value else node.otherwise
        if node.then == node.otherwise:
            return node.then
    return node


def approximate(tree: Node, version: int, hook: str | None = None, depth: int | None = None) -> tuple[Node, bool]:
    """(tree over what the kernel can test, exact). The result accepts every
    packet of `version` that `tree` accepts; exact when it accepts no other.
    Subtrees deeper than `depth` become unknown (true)."""
    ctx = _Context(version, hook)

    def visit(node: Node, level: int) -> tuple[Node, bool]:
        if depth is not None and level > depth and not isinstance(node, Const):
            return TRUE, False
        if isinstance(node, Const):
            return node, True
        if isinstance(node, Test):
            return _approximate_test(node, ctx)
        if isinstance(node, (And, Or)):
            left, left_exact = visit(node.left, level + 1)
            if isinstance(node, And) and left == FALSE and left_exact:
                return FALSE, True
            if isinstance(node, Or) and left == TRUE and left_exact:
                return TRUE, True
            right, right_exact = visit(node.right, level + 1)
            return _simplify(type(node)(left, right)), left_exact and right_exact
        test, test_exact = visit(node.test, level + 1)
        then, then_exact = visit(node.then, level + 1)
        otherwise, otherwise_exact = visit(node.otherwise, level + 1)
        if not test_exact:
            # A superset of the test says nothing of its negation: either branch may run.
            return _simplify(Or(then, otherwise)), False
        return _simplify(Cond(test, then, otherwise)), then_exact and otherwise_exact

    return _iterative_guard(visit, tree)


def _iterative_guard(visit, tree):
    try:
        return visit(tree, 0)
    except RecursionError:
        return TRUE, False


# -- code generation ---------------------------------------------------------------

class _Label:
    __slots__ = ()


class _Code:
    """Instructions with symbolic jump targets, resolved once all are placed."""

    def __init__(self):
        self.items: list = []

    def label(self) -> _Label:
        return _Label()

    def place(self, label: _Label) -> None:
        self.items.append(label)

    def op(self, code: int, k: int = 0) -> None:
        self.items.append((code, None, None, k))

    def jump(self, code: int, k: int, true: _Label, false: _Label) -> None:
        self.items.append((code, true, false, k))

    def goto(self, target: _Label) -> None:
        self.items.append((JMP | JA, target, None, 0))

    def resolve(self) -> list[Instruction]:
        items = self._without_useless_gotos()
        position, where = 0, {}
        for item in items:
            if isinstance(item, _Label):
                where[item] = position
            else:
                position += 1
        program, position = [], 0
        for item in items:
            if isinstance(item, _Label):
                continue
            code, true, false, k = item
            if code == JMP | JA and true is not None:
                program.append(Instruction(code, 0, 0, where[true] - position - 1))
            elif true is not None:
                jt, jf = where[true] - position - 1, where[false] - position - 1
                if not (0 <= jt <= 255 and 0 <= jf <= 255):
                    raise OverflowError("jump out of classic BPF range")
                program.append(Instruction(code, jt, jf, k))
            else:
                program.append(Instruction(code, 0, 0, k))
            position += 1
        return program

    def _without_useless_gotos(self) -> list:
        items = self.items
        kept = []
        for i, item in enumerate(items):
            if not isinstance(item, _Label) and item[0] == JMP | JA and item[1] is not None:
                following = i + 1
                while following < len(items) and isinstance(items[following], _Label):
                    if items[following] is item[1]:
                        break
                    following += 1
                if following < len(items) and items[following] is item[1]:
                    continue
            kept.append(item)
        return kept


_LENGTH = _Load(((LD | W | LEN, 0),), 0xFFFFFFFF)


def _load(field: str, version: int) -> _Load | None:
    if field == "impostor":
        return _IMPOSTOR
    if field == "length":
        return _LENGTH
    table = _V4_LOADS if version == 4 else _V6_LOADS
    return table.get(field) or _TRANSPORT_LOADS.get(field)


class _Guarded(NamedTuple):
    """`inner`, whose tests all need transport `protocol`, checked once for all."""

    protocol: int
    inner: Node


def _transport_of(node: Node) -> int | None:
    if isinstance(node, Test) and node.field not in _TRANSPORT:
        guard = FIELDS[node.field].guard if node.field in FIELDS else None
        return _TRANSPORT.get(guard)
    return None


def _group_guards(node: Node) -> Node:
    """Regroups and/or chains so that each transport guard is tested once per
    chain: `tcp.DstPort == 80 or tcp.SrcPort == 80` checks for TCP once.
    Sound because every operand is free of side effects."""
    if isinstance(node, Cond):
        return Cond(_group_guards(node.test), _group_guards(node.then), _group_guards(node.otherwise))
    if not isinstance(node, (And, Or)):
        return node
    kind = type(node)
    parts, stack = [], [node]
    while stack:
        current = stack.pop()
        if type(current) is kind:
            stack += [current.right, current.left]
        else:
            parts.append(_group_guards(current))
    groups: dict[int, list] = {}
    for part in parts:
        protocol = _transport_of(part)
        if protocol is not None:
            groups.setdefault(protocol, []).append(part)
    rebuilt, placed = [], set()
    for part in parts:
        protocol = _transport_of(part)
        if protocol is None or len(groups[protocol]) == 1:
            rebuilt.append(part)
        elif protocol not in placed:
            placed.add(protocol)
            rebuilt.append(_Guarded(protocol, _chain(kind, groups[protocol])))
    return _chain(kind, rebuilt)


def _chain(kind, parts: list) -> Node:
    result = parts[-1]
    for part in reversed(parts[:-1]):
        result = kind(part, result)
    return result


def _present_transport(node: Node) -> int | None:
    """The transport protocol a true `node` proves present, if it is a presence test."""
    if isinstance(node, _Guarded):
        return node.protocol
    if isinstance(node, Test) and node.field in _TRANSPORT and \
            {v for v in (0, 1) if _compare(node.op, v, node.value)} == {1}:
        return _TRANSPORT[node.field]
    return None


class _Generator:
    def __init__(self, version: int, code: _Code):
        self.version, self.code = version, code
        self.known_transport: int | None = None

    def node(self, node: Node, true: _Label, false: _Label) -> None:
        code = self.code
        if isinstance(node, _Guarded):
            checked = code.label()
            self._transport_guard(node.protocol, checked, false)
            code.place(checked)
            outer, self.known_transport = self.known_transport, node.protocol
            self.node(node.inner, true, false)
            self.known_transport = outer
        elif isinstance(node, Const):
            code.goto(true if node.value else false)
        elif isinstance(node, And):
            middle = code.label()
            self.node(node.left, middle, false)
            code.place(middle)
            outer = self.known_transport
            self.known_transport = _present_transport(node.left) or outer
            self.node(node.right, true, false)
            self.known_transport = outer
        elif isinstance(node, Or):
            middle = code.label()
            self.node(node.left, true, middle)
            code.place(middle)
            self.node(node.right, true, false)
        elif isinstance(node, Cond):
            then, otherwise = code.label(), code.label()
            self.node(node.test, then, otherwise)
            code.place(then)
            self.node(node.then, true, false)
            code.place(otherwise)
            self.node(node.otherwise, true, false)
        else:
            self.test(node, true, false)

    def _transport_guard(self, protocol: int, true: _Label, false: _Label) -> None:
        self.code.op(LD | MEM, T_SLOT)
        self.code.jump(JMP | JEQ | K, protocol, true, false)

    def test(self, node: Test, true: _Label, false: _Label) -> None:
        field, code = node.field, self.code
        if field in _TRANSPORT:  # presence, a 0/1 value
            holds = {v for v in (0, 1) if _compare(node.op, v, node.value)}
            if holds == {0, 1}:
                code.goto(true)
            elif not holds:
                code.goto(false)
            elif holds == {1}:
                self._transport_guard(_TRANSPORT[field], true, false)
            else:
                self._transport_guard(_TRANSPORT[field], false, true)
            return
        if field in ("_sport", "_dport"):
            self._port(node, true, false)
            return
        if field in ("ipv6.SrcAddr", "ipv6.DstAddr"):
            self._address128(node, true, false)
            return
        if field == "fragment" and self.version == 6:
            # Here the next header is no extension header, so no fragment header either.
            code.goto(true if _compare(node.op, 0, node.value) else false)
            return
        guard = FIELDS[field].guard if field in FIELDS else None
        if guard in _TRANSPORT and _TRANSPORT[guard] != self.known_transport:
            checked = code.label()
            self._transport_guard(_TRANSPORT[guard], checked, false)
            code.place(checked)
        if node.index is not None:
            size = FIELDS[field].index_size
            load = _Load((({1: B, 2: H, 4: W}[size] | LD | ABS, node.index),), (1 << 8 * size) - 1)
        else:
            load = _load(field, self.version)
        self._compare(load, node.op, node.value, true, false)

    def _compare(self, load: _Load, op: str, value: int, true: _Label, false: _Label) -> None:
        code = self.code
        value -= load.bias
        if load.bit:
            holds = {v for v in (0, 1) if _compare(op, v, value)}
            if len(holds) != 1:
                code.goto(true if holds else false)
                return
            for step in load.steps:
                code.op(*step)
            if holds == {1}:
                code.jump(JMP | JSET | K, load.bit, true, false)
            else:
                code.jump(JMP | JSET | K, load.bit, false, true)
            return
        always = constant_result(op, value, 0, load.hi)
        if always is not None:
            code.goto(true if always else false)
            return
        for step in load.steps:
            code.op(*step)
        self._jump(op, value, true, false)

    def _jump(self, op: str, value: int, true: _Label, false: _Label) -> None:
        code = self.code
        jumps = {"==": (JEQ, true, false), "!=": (JEQ, false, true), ">": (JGT, true, false),
                 ">=": (JGE, true, false), "<": (JGE, false, true), "<=": (JGT, false, true)}
        kind, on_true, on_false = jumps[op]
        code.jump(JMP | kind | K, value, on_true, on_false)

    def _port(self, node: Test, true: _Label, false: _Label) -> None:
        """Source or destination port: ICMP types count as source ports; no transport reads 0."""
        code = self.code
        always = constant_result(node.op, node.value, 0, 0xFFFF)
        if self.known_transport in (6, 17):
            if always is not None:
                code.goto(true if always else false)
                return
            code.op(LD | H | IND, 2 if node.field == "_dport" else 0)
            self._jump(node.op, node.value, true, false)
            return
        ports, icmp, zero, compare = code.label(), code.label(), code.label(), code.label()
        code.op(LD | MEM, T_SLOT)
        after_tcp = code.label()
        code.jump(JMP | JEQ | K, 6, ports, after_tcp)
        code.place(after_tcp)
        if node.field == "_sport":
            after_udp = code.label()
            code.jump(JMP | JEQ | K, 17, ports, after_udp)
            code.place(after_udp)
            code.jump(JMP | JGT | K, 0, icmp, zero)  # T is 0, 6, 17, 1 or 58 here
            code.place(icmp)
            code.op(LD | B | IND, 0)
            code.goto(compare)
        else:
            code.jump(JMP | JEQ | K, 17, ports, zero)
        code.place(zero)
        code.op(LD | IMM, 0)
        code.goto(compare)
        code.place(ports)
        code.op(LD | H | IND, 2 if node.field == "_dport" else 0)
        code.place(compare)
        if always is not None:
            code.goto(true if always else false)
        else:
            self._jump(node.op, node.value, true, false)

    def _address128(self, node: Test, true: _Label, false: _Label) -> None:
        """Four big-endian words, compared lexicographically."""
        code = self.code
        base = 8 if node.field == "ipv6.SrcAddr" else 24
        op, value = node.op, node.value
        always = constant_result(op, value, 0, (1 << 128) - 1)
        if always is not None:
            code.goto(true if always else false)
            return
        words = [(value >> (96 - 32 * i)) & 0xFFFFFFFF for i in range(4)]
        if op in ("==", "!="):
            equal, different = (true, false) if op == "==" else (false, true)
            for i, word in enumerate(words):
                code.op(LD | W | ABS, base + 4 * i)
                following = code.label() if i < 3 else equal
                code.jump(JMP | JEQ | K, word, following, different)
                if i < 3:
                    code.place(following)
            return
        greater, less = (true, false) if op in (">", ">=") else (false, true)
        for i, word in enumerate(words):
            code.op(LD | W | ABS, base + 4 * i)
            if i == 3:
                self._jump(op, word, true, false)
                break
            not_greater, following = code.label(), code.label()
            code.jump(JMP | JGT | K, word, greater, not_greater)
            code.place(not_greater)
            code.jump(JMP | JGE | K, word, following, less)  # equal when not greater and >=
            code.place(following)


def _reads_transport(tree: Node, version: int) -> set[int]:
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
            if head in _TRANSPORT:
                protocols.add(_TRANSPORT[head])
            elif node.field in ("_sport", "_dport"):
                protocols.update((6, 17, 1, 58))
            elif node.field in ("protocol", "fragment") and version == 6:
                protocols.add(-1)  # no transport needed, but IPv6's layout is
    return protocols


def _prelude(code: _Code, version: int, protocols: set[int], accept: _Label) -> None:
    """Sets X to the transport offset and M[T_SLOT] to the transport protocol
    (0 when none), deciding exactly as headers.parse_headers does; IPv6
    packets with extension headers beyond one hop-by-hop header jump to `accept`."""
    reads_protocol = -1 in protocols
    protocols = {p for p in protocols if p > 0 and (p != 1 or version == 4) and (p != 58 or version == 6)}
    # e = min(IP length, bytes present); remaining = e - header length.
    code.op(LDX | W | LEN)
    code.op(LD | H | ABS, 2 if version == 4 else 4)
    if version == 6:
        code.op(ALU | ADD | K, 40)
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
        code.op(LD | H | ABS, 6)
        code.jump(JMP | JSET | K, 0x1FFF, none, whole)
        code.place(whole)
        code.op(LD | B | ABS, 9)
        _dispatch(code, branches, none)
    else:
        code.op(ST, END_SLOT)
        code.op(ALU | SUB | K, 40)
        code.op(ST, REMAINING_SLOT)
        code.op(LDX | IMM, 40)
        code.op(LD | B | ABS, 6)
        hop = code.label()
        for protocol, target in branches.items():
            following = code.label()
            code.jump(JMP | JEQ | K, protocol, target, following)
            code.place(following)
        if not reads_protocol:
            # One hop-by-hop header (MLD, router alerts) is common enough to walk.
            following = code.label()
            code.jump(JMP | JEQ | K, 0, hop, following)
            code.place(following)
        # Other next headers: an extension header (the transport may follow
        # it: accept) or none (no transport). Telling them apart costs more
        # instructions than the rare packet without transport costs here.
        for protocol in (6, 17, 58):
            if protocol not in branches:
                following = code.label()
                code.jump(JMP | JEQ | K, protocol, none, following)
                code.place(following)
        code.goto(accept)
        if not reads_protocol:
            code.place(hop)
            code.op(LD | MEM, REMAINING_SLOT)
            room, fits = code.label(), code.label()
            code.jump(JMP | JGE | K, 8, room, accept)
            code.place(room)
            code.op(LD | B | ABS, 41)
            code.op(ALU | ADD | K, 1)
            code.op(ALU | LSH | K, 3)
            code.op(ALU | ADD | K, 40)
            code.op(MISC | TAX)
            code.op(LD | MEM, END_SLOT)
            code.jump(JMP | JGE | X, 0, fits, accept)
            code.place(fits)
            code.op(ALU | SUB | X)
            code.op(ST, REMAINING_SLOT)
            code.op(LD | B | ABS, 40)
            for protocol in (6, 17, 58):
                following = code.label()
                code.jump(JMP | JEQ | K, protocol, branches.get(protocol, none), following)
                code.place(following)
            code.goto(accept)
    for protocol, target in branches.items():
        code.place(target)
        code.op(LD | MEM, REMAINING_SLOT)
        found = code.label()
        if protocol == 6:
            long_enough = code.label()
            code.jump(JMP | JGE | K, 20, long_enough, none)
            code.place(long_enough)
            code.op(LD | B | IND, 12)
            code.jump(JMP | JGE | K, 0x50, found, none)
        else:
            code.jump(JMP | JGE | K, 8, found, none)
        code.place(found)
        code.op(LD | IMM, protocol)
        code.goto(store)
    code.place(none)
    code.op(LD | IMM, 0)
    code.place(store)
    code.op(ST, T_SLOT)


def _dispatch(code: _Code, branches: dict, otherwise: _Label) -> None:
    for protocol, target in branches.items():
        following = code.label()
        code.jump(JMP | JEQ | K, protocol, target, following)
        code.place(following)
    code.goto(otherwise)


def compile_bpf(tree: Node, version: int) -> list[Instruction]:
    """A classic BPF program over an approximated tree: returns non-zero to accept."""
    code = _Code()
    accept, reject = code.label(), code.label()
    protocols = _reads_transport(tree, version)
    if protocols:
        _prelude(code, version, protocols, accept)
    _Generator(version, code).node(_group_guards(tree), accept, reject)
    code.place(accept)
    code.op(RET | K, ACCEPT_VALUE)
    code.place(reject)
    code.op(RET | K, 0)
    return code.resolve()


def _layout_dependent(tree: Node, version: int) -> bool:
    """An IPv6 program that reads transport fields accepts extension-header packets whole."""
    return version == 6 and bool(_reads_transport(tree, version))


def bytecode(program: list[Instruction]) -> str:
    """The program in the text form `iptables -m bpf --bytecode` reads."""
    return ",".join([str(len(program))] + [f"{i.code} {i.jt} {i.jf} {i.k}" for i in program])


class Translation(NamedTuple):
    tree: Node                       # what the program tests
    program: list[Instruction] | None   # None: every packet (tree is true) or none (false)
    exact: bool


def translate(tree: Node, version: int, hook: str | None = None) -> Translation:
    """The approximated tree and its BPF program for one IP version."""
    approximated, exact = approximate(tree, version, hook)
    depth = _depth(tree)
    while True:
        if isinstance(approximated, Const):
            return Translation(approximated, None, exact)
        try:
            program = compile_bpf(approximated, version)
        except (OverflowError, RecursionError):
            program = None
        if program is not None and len(program) <= MAX_INSTRUCTIONS:
            return Translation(approximated, program, exact and not _layout_dependent(approximated, version))
        depth -= 1
        approximated, _ = approximate(tree, version, hook, depth)
        exact = False


def _depth(tree: Node) -> int:
    deepest, stack = 0, [(tree, 0)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(node, (And, Or)):
            stack += [(node.left, level + 1), (node.right, level + 1)]
        elif isinstance(node, Cond):
            stack += [(node.test, level + 1), (node.then, level + 1), (node.otherwise, level + 1)]
    return deepest


# -- the public face -----------------------------------------------------------------

def _tree(filter) -> Node:
    if isinstance(filter, (Const, Test, And, Or, Cond)):
        return filter
    if isinstance(filter, str):
        from . import parse_filter
        return parse_filter(filter)
    return filter.tree


@functools.lru_cache(maxsize=1)
def xt_bpf_available() -> bool:
    """Whether the running kernel has the xt_bpf match (built in, loaded or loadable)."""
    for path in ("/proc/net/ip_tables_matches", "/proc/net/ip6_tables_matches"):
        try:
            with open(path) as f:
                if any(line.strip() == "bpf" for line in f):
                    return True
        except OSError:
            pass
    release = os.uname().release
    directory = f"/lib/modules/{release}/kernel/net/netfilter"
    try:
        if any(name.startswith("xt_bpf.ko") for name in os.listdir(directory)):
            return True
    except OSError:
        pass
    try:
        import gzip
        with gzip.open("/proc/config.gz", "rt") as f:
            return any(line.strip() in ("CONFIG_NETFILTER_XT_MATCH_BPF=y", "CONFIG_NETFILTER_XT_MATCH_BPF=m")
                       for line in f)
    except OSError:
        return False


def _take_loopback(tree: Node) -> tuple[Node, str]:
    """At the OUTPUT hook, top-level `loopback` tests become `-o lo` / `! -o lo`."""
    if not isinstance(tree, (And, Test)):
        return tree, ""
    parts = flatten_and(tree)
    wanted: set[int] = {0, 1}
    kept = []
    for part in parts:
        if isinstance(part, Test) and part.field == "loopback" and part.index is None:
            wanted &= {v for v in (0, 1) if _compare(part.op, v, part.value)}
        else:
            kept.append(part)
    if not wanted:
        return FALSE, ""
    rest = _chain(And, kept) if kept else TRUE
    if wanted == {0, 1}:
        return (tree if len(kept) == len(parts) else rest), ""
    return rest, "-o lo" if wanted == {1} else "! -o lo"


def flatten_and(node: Node) -> list[Node]:
    parts, stack = [], [node]
    while stack:
        current = stack.pop()
        if isinstance(current, And):
            stack += [current.right, current.left]
        else:
            parts.append(current)
    return parts


def kernel_test(filter, version: int, hook: str | None = None, use_bpf: bool | None = None) -> KernelTest:
    """What the kernel tests of `filter` (a Filter, a tree or filter text) for one IP version.

    `hook` ("I", "O", "P", "F") makes direction exact when the match serves
    one hook only. The callable NfqueueBackend(kernel_prefilter=...) takes.
    """
    tree, interface = _take_loopback(_tree(filter)) if hook == "O" else (_tree(filter), "")
    translation = translate(tree, version, hook)
    if translation.program is None:
        if translation.tree == FALSE:
            return KernelTest(None, True)
        return KernelTest(interface, translation.exact)
    if not (xt_bpf_available() if use_bpf is None else use_bpf):
        return KernelTest(interface, False)
    match = f'-m bpf --bytecode "{bytecode(translation.program)}"'
    return KernelTest(f"{interface} {match}" if interface else match, translation.exact)


HOOKS_OF_LAYER = {Layer.NETWORK: ("I", "O"), Layer.NETWORK_FORWARD: ("F",)}
KernelMatch = Callable[[int, str], "str | None"]


def kernel_match_for(filter, layer: Layer = Layer.NETWORK) -> KernelMatch:
    """The callable netfilter_rules.HandleRules.kernel_match takes: (IP version, hook) -> match."""
    tests = {(version, hook): kernel_test(filter, version, hook)
             for version in (4, 6) for hook in HOOKS_OF_LAYER[Layer(layer)] + ("P",)}
    return lambda version, hook: tests[version, hook].match


def kernel_exactness(filter, layer: Layer = Layer.NETWORK) -> dict[int, bool]:
    """Per IP version: does the kernel match accept exactly the filter's packets, at every hook of the layer?"""
    return {version: all(kernel_test(filter, version, hook).exact for hook in HOOKS_OF_LAYER[Layer(layer)])
            for version in (4, 6)}
