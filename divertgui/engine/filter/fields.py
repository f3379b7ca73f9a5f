"""The fields and macros of the filter language, as data.

`lo`/`hi` are the value range the reference assumes when it folds a test
that cannot fail or cannot succeed (None: it never folds that field).
`guard` is the presence field a header field depends on.
"""

from __future__ import annotations

from typing import NamedTuple

from ..address import Event, Layer

NETWORK_LAYERS = frozenset({Layer.NETWORK, Layer.NETWORK_FORWARD})
NETWORK_ONLY = frozenset({Layer.NETWORK})
ALL_LAYERS = frozenset(Layer)
U8, U16, U32, U128 = 0xFF, 0xFFFF, 0xFFFFFFFF, (1 << 128) - 1
IPV4_MAPPED_LO, IPV4_MAPPED_HI = 0xFFFF00000000, 0xFFFFFFFFFFFF


class Field(NamedTuple):
    name: str
    guard: str | None
    lo: int | None
    hi: int | None
    layers: frozenset
    style: str = "dec"          # how the formatter writes values: dec, hex, ipv4, addr, event
    index_size: int = 0         # bytes per word for index fields, 0 otherwise


def _f(name, guard, lo, hi, layers=NETWORK_LAYERS, style="dec", index_size=0):
    return Field(name, guard, lo, hi, layers, style, index_size)


_NONE = (None, None)
FIELDS = {f.name: f for f in (
    _f("zero", None, 0, 0),
    # `true` and `false` are tests on constant variables in the reference.
    _f("true", None, 1, 1, ALL_LAYERS),
    _f("false", None, 0, 0, ALL_LAYERS),
    _f("timestamp", None, -(1 << 63), (1 << 63) - 1),
    _f("event", None, 0, 9, style="event"),
    _f("outbound", None, 0, 1, NETWORK_ONLY),
    _f("inbound", None, 0, 1, NETWORK_ONLY),
    _f("ifIdx", None, 0, U32),
    _f("subIfIdx", None, 0, U32),
    _f("loopback", None, *_NONE, NETWORK_ONLY),
    _f("impostor", None, *_NONE),
    _f("fragment", None, 0, 1),
    _f("random8", None, 0, U8),
    _f("random16", None, 0, U16),
    _f("random32", None, 0, U32),
    _f("length", None, 20, 0xFFFF + 40),
    _f("ip", None, 0, 1),
    _f("ipv6", None, 0, 1),
    _f("icmp", None, 0, 1),
    _f("icmpv6", None, 0, 1),
    _f("tcp", None, 0, 1),
    _f("udp", None, 0, 1),
    _f("protocol", None, 0, U8, NETWORK_ONLY),
    _f("localAddr", None, 0, U128, NETWORK_ONLY, style="addr"),
    _f("localPort", None, 0, U16, NETWORK_ONLY),
    _f("remoteAddr", None, 0, U128, NETWORK_ONLY, style="addr"),
    _f("remotePort", None, 0, U16, NETWORK_ONLY),
    _f("ip.HdrLength", "ip", 0, 0xF),
    _f("ip.TOS", "ip", 0, U16),
    _f("ip.Length", "ip", 0, U16),
    _f("ip.Id", "ip", 0, U16, style="hex"),
    _f("ip.DF", "ip", 0, 1),
    _f("ip.MF", "ip", 0, 1),
    _f("ip.FragOff", "ip", 0, 0x1FFF),
    _f("ip.TTL", "ip", 0, U8),
    _f("ip.Protocol", "ip", 0, U8),
    _f("ip.Checksum", "ip", 0, U16, style="hex"),
    _f("ip.SrcAddr", "ip", IPV4_MAPPED_LO, IPV4_MAPPED_HI, style="ipv4"),
    _f("ip.DstAddr", "ip", IPV4_MAPPED_LO, IPV4_MAPPED_HI, style="ipv4"),
    _f("ipv6.TrafficClass", "ipv6", 0, U8),
    _f("ipv6.FlowLabel", "ipv6", 0, 0xFFFFF),
    _f("ipv6.Length", "ipv6", 0, U16),
    _f("ipv6.NextHdr", "ipv6", 0, U8),
    _f("ipv6.HopLimit", "ipv6", 0, U8),
    _f("ipv6.SrcAddr", "ipv6", 0, U128, style="addr"),
    _f("ipv6.DstAddr", "ipv6", 0, U128, style="addr"),
    _f("icmp.Type", "icmp", 0, U8),
    _f("icmp.Code", "icmp", 0, U8),
    _f("icmp.Checksum", "icmp", 0, U16, style="hex"),
    _f("icmp.Body", "icmp", *_NONE),
    _f("icmpv6.Type", "icmpv6", 0, U8),
    _f("icmpv6.Code", "icmpv6", 0, U8),
    _f("icmpv6.Checksum", "icmpv6", 0, U16, style="hex"),
    _f("icmpv6.Body", "icmpv6", *_NONE),
    _f("tcp.SrcPort", "tcp", 0, U16),
    _f("tcp.DstPort", "tcp", 0, U16),
    _f("tcp.SeqNum", "tcp", *_NONE),
    _f("tcp.AckNum", "tcp", *_NONE),
    _f("tcp.HdrLength", "tcp", 0, 0xF),
    _f("tcp.Urg", "tcp", 0, 1),
    _f("tcp.Ack", "tcp", 0, 1),
    _f("tcp.Psh", "tcp", 0, 1),
    _f("tcp.Rst", "tcp", 0, 1),
    _f("tcp.Syn", "tcp", 0, 1),
    _f("tcp.Fin", "tcp", 0, 1),
    _f("tcp.Window", "tcp", 0, U16),
    _f("tcp.Checksum", "tcp", 0, U16, style="hex"),
    _f("tcp.UrgPtr", "tcp", 0, U16),
    _f("tcp.PayloadLength", "tcp", 0, U16),
    _f("udp.SrcPort", "udp", 0, U16),
    _f("udp.DstPort", "udp", 0, U16),
    _f("udp.Length", "udp", 0, U16),
    _f("udp.Checksum", "udp", 0, U16, style="hex"),
    _f("udp.PayloadLength", "udp", 0, U16),
    _f("packet", None, 0, U8, style="hex", index_size=1),
    _f("packet16", None, 0, U16, style="hex", index_size=2),
    _f("packet32", None, *_NONE, style="hex", index_size=4),
    _f("tcp.Payload", "tcp", 0, U8, style="hex", index_size=1),
    _f("tcp.Payload16", "tcp", 0, U16, style="hex", index_size=2),
    _f("tcp.Payload32", "tcp", 0, U32, style="hex", index_size=4),
    _f("udp.Payload", "udp", 0, U8, style="hex", index_size=1),
    _f("udp.Payload16", "udp", 0, U16, style="hex", index_size=2),
    _f("udp.Payload32", "udp", 0, U32, style="hex", index_size=4),
    # FLOW, SOCKET and REFLECT fields: known, and refused at the network layers.
    _f("endpointId", None, *_NONE, frozenset()),
    _f("parentEndpointId", None, *_NONE, frozenset()),
    _f("processId", None, *_NONE, frozenset()),
    _f("layer", None, *_NONE, frozenset()),
    _f("priority", None, *_NONE, frozenset()),
)}

# name -> (value, layers where the macro may be used)
MACROS = {
    "TRUE": (1, ALL_LAYERS),
    "FALSE": (0, ALL_LAYERS),
    "TCP": (6, ALL_LAYERS),
    "UDP": (17, ALL_LAYERS),
    "ICMP": (1, ALL_LAYERS),
    "ICMPV6": (58, ALL_LAYERS),
    "PACKET": (int(Event.PACKET), NETWORK_LAYERS),
    "ESTABLISHED": (int(Event.FLOW_ESTABLISHED), frozenset({Layer.FLOW})),
    "DELETED": (int(Event.FLOW_DELETED), frozenset({Layer.FLOW})),
    "BIND": (int(Event.SOCKET_BIND), frozenset({Layer.SOCKET})),
    "CONNECT": (int(Event.SOCKET_CONNECT), frozenset({Layer.SOCKET})),
    "LISTEN": (int(Event.SOCKET_LISTEN), frozenset({Layer.SOCKET})),
    "ACCEPT": (int(Event.SOCKET_ACCEPT), frozenset({Layer.SOCKET})),
    "CLOSE": (int(Event.SOCKET_CLOSE), frozenset({Layer.SOCKET, Layer.REFLECT})),
    "OPEN": (int(Event.REFLECT_OPEN), frozenset({Layer.REFLECT})),
    "NETWORK": (int(Layer.NETWORK), frozenset({Layer.REFLECT})),
    "NETWORK_FORWARD": (int(Layer.NETWORK_FORWARD), frozenset({Layer.REFLECT})),
    "FLOW": (int(Layer.FLOW), frozenset({Layer.REFLECT})),
    "SOCKET": (int(Layer.SOCKET), frozenset({Layer.REFLECT})),
    "REFLECT": (int(Layer.REFLECT), frozenset({Layer.REFLECT})),
}

INDEX_MAX = 0xFFFF          # byte offsets of index fields stay below this, as in the reference
INDEX_WORD_MAX = 0xFFFF + 40   # the largest index number accepted before scaling (WinDivert's MTU)

# Fields compared on all 128 bits. Every other field is compared, after the
# reference's folding, against the low 32 bits of the written value with its
# sign kept: `tcp.SeqNum == 0x100000001` matches sequence number 1.
BIG_FIELDS = frozenset({"timestamp", "localAddr", "remoteAddr", "ip.SrcAddr", "ip.DstAddr",
                        "ipv6.SrcAddr", "ipv6.DstAddr"})


def effective_value(field: str, value: int) -> int:
    """The number a field is really compared with (see BIG_FIELDS)."""
    if field in BIG_FIELDS:
        return value
    magnitude = abs(value) & 0xFFFFFFFF
    return -magnitude if value < 0 else magnitude
