"""A compiled filter as WinDivert's object text (`WinDivertHelperCompileFilter`'s object,
"@WinDiv_..."): what the REFLECT layer gives as an event's data.

Numbers are written in 5-bit digits, most significant first, the last one
marked (WinDivertSerializeNumber); each test is its field's and comparison's
numbers, the value's sign and words, and its two jump labels.
"""

from __future__ import annotations

from .program import ACCEPT, REJECT, Step

_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz+="
# WINDIVERT_FILTER_FIELD_* in their numbering (include/windivert_device.h).
FIELD_NUMBERS = {name: number for number, name in enumerate((
    "zero", "inbound", "outbound", "ifIdx", "subIfIdx", "ip", "ipv6", "icmp", "tcp", "udp", "icmpv6",
    "ip.HdrLength", "ip.TOS", "ip.Length", "ip.Id", "ip.DF", "ip.MF", "ip.FragOff", "ip.TTL", "ip.Protocol",
    "ip.Checksum", "ip.SrcAddr", "ip.DstAddr", "ipv6.TrafficClass", "ipv6.FlowLabel", "ipv6.Length",
    "ipv6.NextHdr", "ipv6.HopLimit", "ipv6.SrcAddr", "ipv6.DstAddr", "icmp.Type", "icmp.Code", "icmp.Checksum",
    "icmp.Body", "icmpv6.Type", "icmpv6.Code", "icmpv6.Checksum", "icmpv6.Body", "tcp.SrcPort", "tcp.DstPort",
    "tcp.SeqNum", "tcp.AckNum", "tcp.HdrLength", "tcp.Urg", "tcp.Ack", "tcp.Psh", "tcp.Rst", "tcp.Syn", "tcp.Fin",
    "tcp.Window", "tcp.Checksum", "tcp.UrgPtr", "tcp.PayloadLength", "udp.SrcPort", "udp.DstPort", "udp.Length",
    "udp.Checksum", "udp.PayloadLength", "loopback", "impostor", "processId", "localAddr", "remoteAddr",
    "localPort", "remotePort", "protocol", "endpointId", "parentEndpointId", "layer", "priority", "event",
    "packet", "packet16", "packet32", "tcp.Payload", "tcp.Payload16", "tcp.Payload32", "udp.Payload",
    "udp.Payload16", "udp.Payload32", "length", "timestamp", "random8", "random16", "random32", "fragment"))}
_TEST_NUMBERS = {"==": 0, "!=": 1, "<": 2, "<=": 3, ">": 4, ">=": 5}
_FOUR_WORDS = frozenset({"ipv6.SrcAddr", "ipv6.DstAddr", "localAddr", "remoteAddr"})
_TWO_WORDS = frozenset({"endpointId", "parentEndpointId", "timestamp"})


def _number(value: int) -> str:
    digits = [value >> 30 & 0x3]
    digits += [value >> shift & 0x1F for shift in range(25, -5, -5)]
    while len(digits) > 1 and digits[0] == 0:
        digits.pop(0)
    return "".join(_DIGITS[d + (32 if i == len(digits) - 1 else 0)] for i, d in enumerate(digits))


def _label(target: int) -> str:
    return "A" if target == ACCEPT else "X" if target == REJECT else "L" + _number(target)


def _test(step: Step) -> str:
    test = step.test
    magnitude = abs(test.value)
    words = [magnitude >> (32 * i) & 0xFFFFFFFF for i in range(4)]
    out = ["_", _number(FIELD_NUMBERS[test.field]), _number(_TEST_NUMBERS[test.op]),
           _number(1 if test.value < 0 else 0), _number(words[0])]
    if test.field in _FOUR_WORDS:
        out += [_number(word) for word in words[1:]]
    elif test.field in _TWO_WORDS:
        out.append(_number(words[1]))
    elif test.index is not None:
        out.append(_number((test.index + 0xFFFF) & 0xFFFFFFFF))
    return "".join(out) + _label(step.success) + _label(step.failure)


def filter_object(program: list[Step]) -> str:
    """The object text of a compiled filter's program (Filter.program)."""
    return "@WinDiv_" + _number(0) + _number(len(program)) + "".join(_test(step) for step in program)


_FIELD_NAMES = {number: name for name, number in FIELD_NUMBERS.items()}
_TEST_OPS = {number: op for op, number in _TEST_NUMBERS.items()}
_INDEX_FIELDS = frozenset({"packet", "packet16", "packet32", "tcp.Payload", "tcp.Payload16", "tcp.Payload32",
                           "udp.Payload", "udp.Payload16", "udp.Payload32"})
_IPV4_FIELDS = frozenset({"ip.SrcAddr", "ip.DstAddr"})


class _Reader:
    def __init__(self, text: str):
        self.text, self.pos = text, 0

    def char(self) -> str:
        if self.pos >= len(self.text):
            raise ValueError("the filter object ends early")
        self.pos += 1
        return self.text[self.pos - 1]

    def number(self) -> int:
        value = 0
        for _ in range(7):
            digit = _DIGITS.find(self.char())
            if digit < 0:
                raise ValueError("a bad digit in the filter object")
            value = value << 5 | (digit & 0x1F)
            if digit >= 32:
                return value & 0xFFFFFFFF
        raise ValueError("a number in the filter object is too long")

    def label(self) -> int:
        kind = self.char()
        if kind in "AX":
            return ACCEPT if kind == "A" else REJECT
        if kind != "L":
            raise ValueError("a bad jump label in the filter object")
        return self.number()


def parse_object(text: str) -> list[Step]:
    """The program of a filter object (WinDivertDeserializeFilter); ValueError when it is malformed."""
    from .ast import Test
    if not text.startswith("@WinDiv_"):
        raise ValueError("not a filter object")
    reader = _Reader(text[len("@WinDiv_"):].rstrip("\0"))
    if reader.number() != 0:
        raise ValueError("an unknown filter object version")
    length = reader.number()
    steps = []
    for i in range(length):
        if reader.char() != "_":
            raise ValueError("a bad test in the filter object")
        field, op, negative = _FIELD_NAMES.get(reader.number()), _TEST_OPS.get(reader.number()), reader.number()
        if field is None or op is None or negative > 1:
            raise ValueError("a bad test in the filter object")
        value, index = reader.number(), None
        if field in _FOUR_WORDS:
            for shift in (32, 64, 96):
                value |= reader.number() << shift
        elif field in _TWO_WORDS:
            value |= reader.number() << 32
        elif field in _IPV4_FIELDS:
            value |= 0xFFFF << 32
        elif field in _INDEX_FIELDS:
            index = reader.number() - 0xFFFF
        success, failure = reader.label(), reader.label()
        if any(0 <= target <= i or target >= length for target in (success, failure)):
            raise ValueError("a jump in the filter object goes backwards or beyond its end")
        steps.append(Step(Test(field, op, -value if negative else value, index), success, failure))
    if reader.pos != len(reader.text) or not steps:
        raise ValueError("the filter object has trailing characters or no test")
    return steps
