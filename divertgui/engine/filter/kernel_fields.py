"""What the kernel reads of each filter field, and how: the BPF loads that put
a field's value in the accumulator, per IP version."""

from __future__ import annotations

from typing import NamedTuple

from ..header_fields import FILTER_READS, IPV4, IPV6, TRANSPORT_PROTOCOLS, HeaderField
from .bpf import ABS, AND_, ALU, B, H, IND, K, LD, LDX, LEN, LSH, MEM, MISC, OR, RSH, SKF_AD_MARK, ST, TXA, W, X
from .fields import IPV4_MAPPED_LO

INJECTED_MARK = 0x00000400     # netfilter_rules.INJECTED_MARK
TRANSPORT = TRANSPORT_PROTOCOLS
# Scratch memory a composite field's load uses (bpf_prelude uses 0..2).
_SAVED_X_SLOT, _VALUE_SLOT = 3, 4


class Load(NamedTuple):
    """How a field's value is read into A: instructions (code, k), value range,
    and `bit`: a one-bit field tested with jset (0 = compare the value)."""

    steps: tuple
    hi: int
    bit: int = 0
    bias: int = 0      # subtracted from the constant (IPv4-mapped addresses)
    reads_x: bool = False


def _steps(field: HeaderField, x: bool) -> list:
    steps = [(LD | {1: B, 2: H, 4: W}[field.size] | (IND if x else ABS), field.offset)]
    if field.shift:
        steps.append((ALU | RSH | K, field.shift))
    if ((1 << 8 * field.size) - 1) >> field.shift != field.mask:
        steps.append((ALU | AND_ | K, field.mask))
    return steps


def _composite_steps(pieces) -> list:
    """Pieces combined through scratch memory, X kept for the transport header's offset."""
    steps = [(MISC | TXA, 0), (ST, _SAVED_X_SLOT)]
    for number, (field, position) in enumerate(pieces):
        steps += _steps(field, x=False)
        if position:
            steps.append((ALU | LSH | K, position))
        if number:
            steps += [(LDX | MEM, _VALUE_SLOT), (ALU | OR | X, 0)]
        steps.append((ST, _VALUE_SLOT))
    return steps + [(LDX | MEM, _SAVED_X_SLOT), (LD | MEM, _VALUE_SLOT)]


def _load(name: str) -> Load:
    read = FILTER_READS[name]
    x = read.header in TRANSPORT
    field = read.field
    if field is None:
        return Load(tuple(_composite_steps(read.pieces)), read.hi)
    if field.kind == "flag":
        byte = field.offset + field.size - 1 - field.shift // 8
        return Load(((LD | B | (IND if x else ABS), byte),), 1, bit=1 << field.shift % 8, reads_x=x)
    bias = IPV4_MAPPED_LO if field.kind == "address" else 0
    return Load(tuple(_steps(field, x)), read.hi, bias=bias, reads_x=x)


# The header fields the kernel tests; kernel_approximation says why the others are unknown.
_V4_LOADS = {name: _load(name) for name in (
    "ip.HdrLength", "ip.TOS", "ip.DF", "ip.MF", "ip.FragOff", "ip.TTL", "ip.Protocol", "ip.SrcAddr", "ip.DstAddr")}
_V4_LOADS["protocol"] = Load(tuple(_steps(IPV4["protocol"], x=False)), 0xFF)
_V4_LOADS["fragment"] = Load(((LD | H | ABS, IPV4["frag_offset"].offset),), 1,
                             bit=IPV4["frag_offset"].mask | 1 << IPV4["mf"].shift + 8)
_V6_LOADS = {name: _load(name) for name in ("ipv6.TrafficClass", "ipv6.FlowLabel", "ipv6.NextHdr", "ipv6.HopLimit")}
_V6_LOADS["protocol"] = Load(tuple(_steps(IPV6["next_hdr"], x=False)), 0xFF)
_TRANSPORT_LOADS = {name: _load(name) for name in (
    "icmp.Type", "icmp.Code", "icmp.Body", "icmpv6.Type", "icmpv6.Code", "icmpv6.Body",
    "tcp.SrcPort", "tcp.DstPort", "tcp.AckNum", "tcp.HdrLength", "tcp.Ack", "tcp.Rst", "tcp.Syn",
    "udp.SrcPort", "udp.DstPort")}
_IMPOSTOR = Load(((LD | W | ABS, SKF_AD_MARK),), 1, bit=INJECTED_MARK)

_LENGTH = Load(((LD | W | LEN, 0),), 0xFFFFFFFF)


def field_load(field: str, version: int) -> Load | None:
    if field == "impostor":
        return _IMPOSTOR
    if field == "length":
        return _LENGTH
    table = _V4_LOADS if version == 4 else _V6_LOADS
    return table.get(field) or _TRANSPORT_LOADS.get(field)


def compare(op: str, a: int, b: int) -> bool:
    return {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
