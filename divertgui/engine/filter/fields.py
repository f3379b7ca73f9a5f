"""The fields and macros of the filter language, as data.

`lo`/`hi` are the value range the reference assumes when it folds a test
that cannot fail or cannot succeed (None: it never folds that field).
`guard` is the presence field a header field depends on.
"""

from __future__ import annotations

from typing import NamedTuple

from ..address import PRIORITY_MAX, PRIORITY_MIN, Event, Layer
from ..address_text import IPV4_MAPPED

# Where each field is valid: WinDivertValidateField's table (dll/windivert_shared.c).
NETWORK_LAYERS = frozenset({Layer.NETWORK, Layer.NETWORK_FORWARD})
NETWORK_ONLY = frozenset({Layer.NETWORK})
ALL_LAYERS = frozenset(Layer)
EVENT_LAYERS = frozenset({Layer.FLOW, Layer.SOCKET, Layer.REFLECT})
ENDPOINT_LAYERS = frozenset({Layer.FLOW, Layer.SOCKET})
NOT_REFLECT = ALL_LAYERS - {Layer.REFLECT}
ENDPOINT_AND_NETWORK = ENDPOINT_LAYERS | NETWORK_ONLY
PROCESS_LAYERS = EVENT_LAYERS
REFLECT_ONLY = frozenset({Layer.REFLECT})
U8, U16, U32, U64, U128 = 0xFF, 0xFFFF, 0xFFFFFFFF, (1 << 64) - 1, (1 << 128) - 1
IPV4_MAPPED_LO, IPV4_MAPPED_HI = IPV4_MAPPED, IPV4_MAPPED | 0xFFFFFFFF


class Field(NamedTuple):
    name: str
    guard: str | None
    lo: int | None
    hi: int | None
    layers: frozenset
    style: str = "dec"          # how the formatter writes values: dec, hex, ipv4, addr, event, layer
    index_size: int = 0         # bytes per word for index fields, 0 otherwise


def _f(name, guard, lo, hi, layers=NETWORK_LAYERS, style="dec", index_size=0):
    return Field(name, guard, lo, hi, layers, style, index_size)


_NONE = (None, None)
FIELDS = {f.name: f for f in (
    _f("zero", None, 0, 0, ALL_LAYERS),
    # `true` and `false` are tests on constant variables in the reference.
    _f("true", None, 1, 1, ALL_LAYERS),
    _f("false", None, 0, 0, ALL_LAYERS),
    _f("timestamp", None, -(1 << 63), (1 << 63) - 1, ALL_LAYERS),
    _f("event", None, 0, 9, ALL_LAYERS, style="event"),
    _f("outbound", None, 0, 1, ENDPOINT_AND_NETWORK),
    _f("inbound", None, 0, 1, ENDPOINT_AND_NETWORK),
    _f("ifIdx", None, 0, U32),
    _f("subIfIdx", None, 0, U32),
    _f("loopback", None, *_NONE, ENDPOINT_AND_NETWORK),
    _f("impostor", None, *_NONE),
    _f("fragment", None, 0, 1),
    _f("random8", None, 0, U8),
    _f("random16", None, 0, U16),
    _f("random32", None, 0, U32),
    _f("length", None, 20, 0xFFFF + 40),
    _f("ip", None, 0, 1, NOT_REFLECT),
    _f("ipv6", None, 0, 1, NOT_REFLECT),
    _f("icmp", None, 0, 1, NOT_REFLECT),
    _f("icmpv6", None, 0, 1, NOT_REFLECT),
    _f("tcp", None, 0, 1, NOT_REFLECT),
    _f("udp", None, 0, 1, NOT_REFLECT),
    _f("protocol", None, 0, U8, ENDPOINT_AND_NETWORK),
    _f("localAddr", None, 0, U128, ENDPOINT_AND_NETWORK, style="addr"),
    _f("localPort", None, 0, U16, ENDPOINT_AND_NETWORK),
    _f("remoteAddr", None, 0, U128, ENDPOINT_AND_NETWORK, style="addr"),
    _f("remotePort", None, 0, U16, ENDPOINT_AND_NETWORK),
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
    # The reference folds with the 20-bit range although the value it compares
    # is wider (header_fields.WINDIVERT_FLOW_LABEL).
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
    _f("endpointId", None, 0, U64, ENDPOINT_LAYERS),
    _f("parentEndpointId", None, 0, U64, ENDPOINT_LAYERS),
    _f("processId", None, 0, U32, PROCESS_LAYERS),
    _f("layer", None, 0, max(Layer), REFLECT_ONLY, style="layer"),
    _f("priority", None, PRIORITY_MIN, PRIORITY_MAX, REFLECT_ONLY),
)}


def _at(layers, value) -> dict:
    return {layer: int(value) for layer in layers}


# name -> {layer where the macro may be used: its value there}. CLOSE is
# SOCKET_CLOSE at the socket layer and REFLECT_CLOSE at the reflect layer.
MACROS = {
    "TRUE": _at(Layer, 1),
    "FALSE": _at(Layer, 0),
    "TCP": _at(Layer, 6),
    "UDP": _at(Layer, 17),
    "ICMP": _at(Layer, 1),
    "ICMPV6": _at(Layer, 58),
    "PACKET": _at(NETWORK_LAYERS, Event.PACKET),
    "ESTABLISHED": _at({Layer.FLOW}, Event.FLOW_ESTABLISHED),
    "DELETED": _at({Layer.FLOW}, Event.FLOW_DELETED),
    "BIND": _at({Layer.SOCKET}, Event.SOCKET_BIND),
    "CONNECT": _at({Layer.SOCKET}, Event.SOCKET_CONNECT),
    "LISTEN": _at({Layer.SOCKET}, Event.SOCKET_LISTEN),
    "ACCEPT": _at({Layer.SOCKET}, Event.SOCKET_ACCEPT),
    "CLOSE": {Layer.SOCKET: int(Event.SOCKET_CLOSE), Layer.REFLECT: int(Event.REFLECT_CLOSE)},
    "OPEN": _at({Layer.REFLECT}, Event.REFLECT_OPEN),
    # The layer names are numbers at every layer (the reference expands them everywhere).
    **{layer.name: _at(Layer, layer) for layer in Layer},
}

# The event macro that names each (layer, event value), for the formatter.
_EVENT_MACROS = ("PACKET", "ESTABLISHED", "DELETED", "BIND", "CONNECT", "LISTEN", "ACCEPT", "CLOSE", "OPEN")
EVENT_NAMES = {(layer, value): name for name in _EVENT_MACROS for layer, value in MACROS[name].items()}

INDEX_MAX = 0xFFFF          # byte offsets of index fields stay below this, as in the reference
INDEX_WORD_MAX = 0xFFFF + 40   # the largest index number accepted before scaling (WinDivert's MTU)

# Fields compared on all 128 bits. Every other field is compared, after the
# reference's folding, against the low 32 bits of the written value with its
# sign kept: `tcp.SeqNum == 0x100000001` matches sequence number 1.
BIG_FIELDS = frozenset({"timestamp", "endpointId", "parentEndpointId", "localAddr", "remoteAddr", "ip.SrcAddr", "ip.DstAddr",
                        "ipv6.SrcAddr", "ipv6.DstAddr"})


def effective_value(field: str, value: int) -> int:
    """The number a field is really compared with (see BIG_FIELDS)."""
    if field in BIG_FIELDS:
        return value
    magnitude = abs(value) & 0xFFFFFFFF
    return -magnitude if value < 0 else magnitude
