"""A SOCKET-layer filter as eBPF jumps over the event record on the stack.

The kernel programs fill one record per socket operation (socket_record.py)
and then run this code, so that the handle's own filter decides in the
kernel whether the operation is reported and, for a handle without SNIFF,
refused. Every field a SOCKET filter may name reads the record exactly as
the Python compiler reads the address (filter/compiler.py, `_ENDPOINT`):
`ip` and `ipv6` are 0, `icmp` and `icmpv6` follow the IPv6 bit.
"""

from __future__ import annotations

from divertgui.engine.filter import And, Cond, Const, Node, Or, Test
from divertgui.engine.header_fields import IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP

from . import ebpf
from .ebpf import B, DW, H, R2, R3, R10, W, Assembler, Label
from .socket_record import OFFSET, RECORD

# field -> (size, record offset, signed) for fields read straight from the record.
_PLAIN = {
    "timestamp": (DW, OFFSET["timestamp"], True),
    "endpointId": (DW, OFFSET["endpoint_id"], False),
    "parentEndpointId": (DW, OFFSET["parent_endpoint_id"], False),
    "processId": (W, OFFSET["process_id"], False),
    "event": (W, OFFSET["event"], False),
    "localPort": (H, OFFSET["local_port"], False),
    "remotePort": (H, OFFSET["remote_port"], False),
    "protocol": (B, OFFSET["protocol"], False),
    "outbound": (B, OFFSET["outbound"], False),
    "loopback": (B, OFFSET["loopback"], False),
}
_ADDRESSES = {"localAddr": OFFSET["local_addr"], "remoteAddr": OFFSET["remote_addr"]}
# Fields computed from the protocol and the IPv6 bit: (protocol, IPv6 bit required or None).
_PROTOCOL_FLAGS = {"tcp": (IPPROTO_TCP, None), "udp": (IPPROTO_UDP, None), "icmp": (IPPROTO_ICMP, 0),
                   "icmpv6": (IPPROTO_ICMPV6, 1)}


def _at(offset: int) -> int:
    return RECORD + offset


def compile_filter(code: Assembler, tree: Node, match: Label, miss: Label) -> None:
    """Jumps to `match` when the record satisfies `tree`, to `miss` otherwise."""
    if isinstance(tree, Const):
        code.goto(match if tree.value else miss)
    elif isinstance(tree, And):
        middle = code.label()
        compile_filter(code, tree.left, middle, miss)
        code.place(middle)
        compile_filter(code, tree.right, match, miss)
    elif isinstance(tree, Or):
        middle = code.label()
        compile_filter(code, tree.left, match, middle)
        code.place(middle)
        compile_filter(code, tree.right, match, miss)
    elif isinstance(tree, Cond):
        then, otherwise = code.label(), code.label()
        compile_filter(code, tree.test, then, otherwise)
        code.place(then)
        compile_filter(code, tree.then, match, miss)
        code.place(otherwise)
        compile_filter(code, tree.otherwise, match, miss)
    else:
        _test(code, tree, match, miss)


def _test(code: Assembler, test: Test, match: Label, miss: Label) -> None:
    if test.field in _ADDRESSES:
        _address_test(code, test, _ADDRESSES[test.field], match, miss)
        return
    signed = False
    if test.field in _PLAIN:
        size, offset, signed = _PLAIN[test.field]
        code.load(size, R2, R10, _at(offset))                      # r2 = the record's field
    elif test.field == "inbound":
        code.load(B, R2, R10, _at(OFFSET["outbound"]))
        code.alu_imm(ebpf.XOR, R2, 1)                               # r2 = !outbound
    elif test.field in _PROTOCOL_FLAGS:
        protocol, ipv6 = _PROTOCOL_FLAGS[test.field]
        done = code.label()
        code.mov_imm(R2, 0)                                         # r2 = 0 unless both hold:
        code.load(B, R3, R10, _at(OFFSET["protocol"]))
        code.jump_imm(ebpf.JNE, R3, protocol, done)                 #   the protocol is this one
        if ipv6 is not None:
            code.load(B, R3, R10, _at(OFFSET["ipv6"]))
            code.jump_imm(ebpf.JNE, R3, ipv6, done)                 #   and the IP version fits
        code.mov_imm(R2, 1)
        code.place(done)
    elif test.field in ("ip", "ipv6", "zero"):
        code.mov_imm(R2, 0)                                         # always 0 for an event
    else:
        raise ValueError(f"{test.field} is not a SOCKET-layer field")
    code.load_imm64(R3, test.value)                                 # r3 = the constant
    unsigned_op, signed_op = ebpf.COMPARISONS[test.op]
    code.jump_reg(signed_op if signed else unsigned_op, R2, R3, match)
    code.goto(miss)


def _address_test(code: Assembler, test: Test, offset: int, match: Label, miss: Label) -> None:
    """A 128-bit comparison, word by word from the most significant (the record keeps
    addresses as four host-order 32-bit words, most significant first)."""
    words = [test.value >> (96 - 32 * i) & 0xFFFFFFFF for i in range(4)]
    if test.op in ("==", "!="):
        equal, differ = (match, miss) if test.op == "==" else (miss, match)
        for i, word in enumerate(words):
            code.load(W, R2, R10, _at(offset + 4 * i))
            code.load_imm64(R3, word)
            code.jump_reg(ebpf.JNE, R2, R3, differ)
        code.goto(equal)
        return
    less = match if test.op in ("<", "<=") else miss
    greater = match if test.op in (">", ">=") else miss
    equal = match if test.op in ("<=", ">=") else miss
    for i, word in enumerate(words):
        code.load(W, R2, R10, _at(offset + 4 * i))
        code.load_imm64(R3, word)
        code.jump_reg(ebpf.JLT, R2, R3, less)
        code.jump_reg(ebpf.JGT, R2, R3, greater)
    code.goto(equal)
