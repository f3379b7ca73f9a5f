"""compile_bpf: an approximated filter tree as one classic BPF program that
returns non-zero for the packets the tree accepts."""

from __future__ import annotations

from typing import NamedTuple

from .ast import And, Cond, Const, Node, Or, Test
from .bpf import ABS, B, H, IMM, IND, JEQ, JGE, JGT, JMP, JSET, K, LD, MEM, RET, W, Assembler, Instruction, Label
from .bpf_prelude import T_SLOT, prelude, reads_transport
from .chains import chain
from .fields import FIELDS
from .kernel_fields import TRANSPORT, Load, compare, field_load
from .simplify import constant_result

ACCEPT_VALUE = 0xFFFF


class _Guarded(NamedTuple):
    """`inner`, whose tests all need transport `protocol`, checked once for all."""

    protocol: int
    inner: Node


def _transport_of(node: Node) -> int | None:
    if isinstance(node, Test) and node.field not in TRANSPORT:
        guard = FIELDS[node.field].guard if node.field in FIELDS else None
        return TRANSPORT.get(guard)
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
            rebuilt.append(_Guarded(protocol, chain(kind, groups[protocol])))
    return chain(kind, rebuilt)


def _present_transport(node: Node) -> int | None:
    """The transport protocol a true `node` proves present, if it is a presence test."""
    if isinstance(node, _Guarded):
        return node.protocol
    if isinstance(node, Test) and node.field in TRANSPORT and \
            {v for v in (0, 1) if compare(node.op, v, node.value)} == {1}:
        return TRANSPORT[node.field]
    return None


class _Generator:
    def __init__(self, version: int, code: Assembler):
        self.version, self.code = version, code
        self.known_transport: int | None = None

    def node(self, node: Node, true: Label, false: Label) -> None:
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

    def _transport_guard(self, protocol: int, true: Label, false: Label) -> None:
        self.code.op(LD | MEM, T_SLOT)
        self.code.jump(JMP | JEQ | K, protocol, true, false)

    def test(self, node: Test, true: Label, false: Label) -> None:
        field, code = node.field, self.code
        if field in TRANSPORT:  # presence, a 0/1 value
            holds = {v for v in (0, 1) if compare(node.op, v, node.value)}
            if holds == {0, 1}:
                code.goto(true)
            elif not holds:
                code.goto(false)
            elif holds == {1}:
                self._transport_guard(TRANSPORT[field], true, false)
            else:
                self._transport_guard(TRANSPORT[field], false, true)
            return
        if field in ("_sport", "_dport"):
            self._port(node, true, false)
            return
        if field in ("ipv6.SrcAddr", "ipv6.DstAddr"):
            self._address128(node, true, false)
            return
        if field == "fragment" and self.version == 6:
            # Here the next header is no extension header, so no fragment header either.
            code.goto(true if compare(node.op, 0, node.value) else false)
            return
        guard = FIELDS[field].guard if field in FIELDS else None
        if guard in TRANSPORT and TRANSPORT[guard] != self.known_transport:
            checked = code.label()
            self._transport_guard(TRANSPORT[guard], checked, false)
            code.place(checked)
        if node.index is not None:
            size = FIELDS[field].index_size
            load = Load((({1: B, 2: H, 4: W}[size] | LD | ABS, node.index),), (1 << 8 * size) - 1)
        else:
            load = field_load(field, self.version)
        self._compare(load, node.op, node.value, true, false)

    def _compare(self, load: Load, op: str, value: int, true: Label, false: Label) -> None:
        code = self.code
        value -= load.bias
        if load.bit:
            holds = {v for v in (0, 1) if compare(op, v, value)}
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

    def _jump(self, op: str, value: int, true: Label, false: Label) -> None:
        code = self.code
        jumps = {"==": (JEQ, true, false), "!=": (JEQ, false, true), ">": (JGT, true, false),
                 ">=": (JGE, true, false), "<": (JGE, false, true), "<=": (JGT, false, true)}
        kind, on_true, on_false = jumps[op]
        code.jump(JMP | kind | K, value, on_true, on_false)

    def _port(self, node: Test, true: Label, false: Label) -> None:
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

    def _address128(self, node: Test, true: Label, false: Label) -> None:
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


def compile_bpf(tree: Node, version: int) -> list[Instruction]:
    """A classic BPF program over an approximated tree: returns non-zero to accept."""
    code = Assembler()
    accept, reject = code.label(), code.label()
    protocols = reads_transport(tree, version)
    if protocols:
        prelude(code, version, protocols, accept)
    _Generator(version, code).node(_group_guards(tree), accept, reject)
    code.place(accept)
    code.op(RET | K, ACCEPT_VALUE)
    code.place(reject)
    code.op(RET | K, 0)
    return code.resolve()
