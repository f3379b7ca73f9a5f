"""What the kernel reads of each filter field, and how: the BPF loads that put
a field's value in the accumulator, per IP version."""

from __future__ import annotations

from typing import NamedTuple

from .bpf import ABS, AND_, ALU, B, H, IND, K, LD, LEN, RSH, SKF_AD_MARK, W
from .fields import IPV4_MAPPED_LO

INJECTED_MARK = 0x00000400     # netfilter_rules.INJECTED_MARK
TRANSPORT = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}


class Load(NamedTuple):
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
    return Load(tuple(steps), hi, reads_x=x)


def _half(offset, x=False, mask=None, shift=0, hi=0xFFFF):
    steps = [(LD | H | (IND if x else ABS), offset)]
    if shift:
        steps.append((ALU | RSH | K, shift))
    if mask is not None:
        steps.append((ALU | AND_ | K, mask))
    return Load(tuple(steps), hi, reads_x=x)


def _flag(code_offset, bit, x=False):
    return Load(((LD | B | (IND if x else ABS), code_offset),), 1, bit=bit, reads_x=x)


_V4_LOADS = {
    "ip.HdrLength": _byte(0, mask=0x0F, hi=0x0F),
    "ip.TOS": _byte(1),
    "ip.DF": _flag(6, 0x40),
    "ip.MF": _flag(6, 0x20),
    "ip.FragOff": _half(6, mask=0x1FFF, hi=0x1FFF),
    "ip.TTL": _byte(8),
    "ip.Protocol": _byte(9),
    "protocol": _byte(9),
    "ip.SrcAddr": Load(((LD | W | ABS, 12),), 0xFFFFFFFF, bias=IPV4_MAPPED_LO),
    "ip.DstAddr": Load(((LD | W | ABS, 16),), 0xFFFFFFFF, bias=IPV4_MAPPED_LO),
    "fragment": Load(((LD | H | ABS, 6),), 1, bit=0x3FFF),
}
_V6_LOADS = {
    "ipv6.TrafficClass": _half(0, shift=4, mask=0xFF, hi=0xFF),
    "ipv6.FlowLabel": Load(((LD | W | ABS, 0), (ALU | AND_ | K, 0xFFFFF)), 0xFFFFF),
    "ipv6.NextHdr": _byte(6),
    "ipv6.HopLimit": _byte(7),
    "protocol": _byte(6),
}
_TRANSPORT_LOADS = {
    "icmp.Type": _byte(0, x=True), "icmp.Code": _byte(1, x=True),
    "icmp.Body": Load(((LD | W | IND, 4),), 0xFFFFFFFF, reads_x=True),
    "tcp.SrcPort": _half(0, x=True), "tcp.DstPort": _half(2, x=True),
    "tcp.AckNum": Load(((LD | W | IND, 8),), 0xFFFFFFFF, reads_x=True),
    "tcp.HdrLength": _byte(12, x=True, shift=4, hi=0x0F),
    "tcp.Ack": _flag(13, 0x10, x=True), "tcp.Rst": _flag(13, 0x04, x=True), "tcp.Syn": _flag(13, 0x02, x=True),
    "udp.SrcPort": _half(0, x=True), "udp.DstPort": _half(2, x=True),
}
for _name in ("Type", "Code", "Body"):
    _TRANSPORT_LOADS[f"icmpv6.{_name}"] = _TRANSPORT_LOADS[f"icmp.{_name}"]
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
