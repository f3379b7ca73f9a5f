"""Seeded generators of raw packets, addresses and filters for tests.

Every generator takes a random.Random so that a failing case is reproduced
from its seed. Packets are mostly well-formed with some fields drawn from
their edges; `mangle` then truncates, extends or corrupts a share of them.
"""

from __future__ import annotations

import random
import struct

from divertgui.engine.address import Address, EndpointData, Event, Layer, ReflectData
from divertgui.engine.header_fields import IPV6_EXTENSION_HEADERS

IPV4_POOL = ("10.0.0.1", "10.0.0.2", "192.168.1.10", "127.0.0.1", "8.8.8.8", "255.255.255.255", "0.0.0.0")
IPV6_POOL = ("::1", "fe80::1", "fe80::2", "2001:db8::1", "2001:db8::ffff", "::ffff:10.0.0.1", "::")
PORTS = (0, 1, 53, 80, 443, 8080, 65535)


def _ipv4_bytes(text: str) -> bytes:
    return bytes(int(p) for p in text.split("."))


def _ipv6_bytes(text: str) -> bytes:
    import ipaddress
    return ipaddress.IPv6Address(text).packed


def _pick_port(rng: random.Random) -> int:
    return rng.choice(PORTS) if rng.random() < 0.6 else rng.randrange(65536)


def tcp_header(rng: random.Random, payload: bytes = b"") -> bytes:
    options = b""
    if rng.random() < 0.4:
        options = bytes([2, 4, 5, 0xB4, 1, 3, 3, 7])  # MSS, NOP, window scale
        if rng.random() < 0.5:
            options += bytes([8, 10]) + rng.randbytes(8) + b"\x01\x01"  # timestamps
    options += b"\x00" * (-len(options) % 4)
    data_offset = 5 + len(options) // 4
    if rng.random() < 0.05:
        data_offset = rng.randrange(16)  # lies about its length
    flags = rng.randrange(256) if rng.random() < 0.5 else rng.choice((0x02, 0x12, 0x10, 0x18, 0x11, 0x04))
    return struct.pack(
        "!HHIIBBHHH", _pick_port(rng), _pick_port(rng), rng.getrandbits(32), rng.getrandbits(32),
        data_offset << 4 | rng.randrange(16) if rng.random() < 0.1 else data_offset << 4, flags,
        rng.randrange(65536), rng.randrange(65536), rng.randrange(65536)) + options + payload


def udp_header(rng: random.Random, payload: bytes = b"") -> bytes:
    length = 8 + len(payload)
    if rng.random() < 0.1:
        length = rng.randrange(65536)
    return struct.pack("!HHHH", _pick_port(rng), _pick_port(rng), length, rng.randrange(65536)) + payload


def icmp_header(rng: random.Random, payload: bytes = b"") -> bytes:
    kind = rng.choice((0, 3, 8, 11, 128, 129, 135, 136)) if rng.random() < 0.8 else rng.randrange(256)
    return struct.pack("!BBH", kind, rng.randrange(4), rng.randrange(65536)) + rng.randbytes(4) + payload


def payload(rng: random.Random) -> bytes:
    size = rng.choice((0, 0, 1, 2, 3, 4, 7, 8, 16, 33, 100))
    if rng.random() < 0.3:
        return b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[:size] if size else b""
    return rng.randbytes(size)


def transport(rng: random.Random, version: int) -> tuple[int, bytes]:
    kind = rng.random()
    body = payload(rng)
    if kind < 0.4:
        return 6, tcp_header(rng, body)
    if kind < 0.7:
        return 17, udp_header(rng, body)
    if kind < 0.9:
        return (1 if version == 4 else 58) if rng.random() < 0.9 else (58 if version == 4 else 1), \
            icmp_header(rng, body)
    return rng.choice((0, 2, 47, 50, 59, 132, 255)), body


def ipv4_packet(rng: random.Random) -> bytes:
    protocol, data = transport(rng, 4)
    options = b""
    if rng.random() < 0.2:
        options = rng.choice((b"\x01\x01\x01\x00", b"\x07\x07\x04" + rng.randbytes(4) + b"\x00",
                              b"\x94\x04\x00\x00", rng.randbytes(rng.randrange(1, 40))))
        options += b"\x00" * (-len(options) % 4)
        options = options[:40]
    ihl = 5 + len(options) // 4
    total = 20 + len(options) + len(data)
    flags_offset = 0
    r = rng.random()
    if r < 0.15:
        flags_offset = 0x2000  # first fragment
    elif r < 0.3:
        flags_offset = rng.randrange(1, 0x2000) | rng.choice((0, 0x2000))
    elif r < 0.6:
        flags_offset = 0x4000
    elif r < 0.65:
        flags_offset = rng.randrange(65536)
    length_field = total
    if rng.random() < 0.1:
        length_field = rng.choice((total - 1, total + 1, 20, 0, rng.randrange(65536), 20 + len(options)))
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, rng.randrange(256), length_field & 0xFFFF, rng.randrange(65536),
        flags_offset, rng.choice((0, 1, 64, 128, 255)), protocol, rng.randrange(65536),
        _ipv4_bytes(rng.choice(IPV4_POOL)), _ipv4_bytes(rng.choice(IPV4_POOL)))
    return header + options + data


def _ext_header(rng: random.Random, kind: int, next_header: int, fragment_offset: int | None) -> bytes:
    if kind == 44:
        offset = fragment_offset if fragment_offset is not None else 0
        return struct.pack("!BBHI", next_header, 0, (offset << 3) | rng.randrange(2), rng.getrandbits(32))
    if kind == 51:
        words = rng.choice((1, 2, 4))  # AH length in 4-byte units minus 2
        return bytes([next_header, words]) + rng.randbytes((words + 2) * 4 - 2)
    units = rng.choice((0, 0, 1, 2))
    return bytes([next_header, units]) + rng.randbytes((units + 1) * 8 - 2)


# The extension headers WinDivert walks, and two it does not (HIP, experimental).
_EXTENSION_KINDS = (*sorted(IPV6_EXTENSION_HEADERS), 139, 253)


def ipv6_packet(rng: random.Random) -> bytes:
    protocol, data = transport(rng, 6)
    chain = []
    if rng.random() < 0.5:
        chain = [rng.choice(_EXTENSION_KINDS) for _ in range(rng.randrange(1, 4))]
    for kind in reversed(chain):
        offset = None
        if kind == 44 and rng.random() < 0.5:
            offset = rng.randrange(1, 8192)
        data = _ext_header(rng, kind, protocol, offset) + data
        protocol = kind
    length_field = len(data)
    if rng.random() < 0.1:
        length_field = rng.choice((len(data) - 1, len(data) + 1, 0, rng.randrange(65536))) & 0xFFFF
    first_word = (6 << 28) | (rng.randrange(256) << 20) | rng.randrange(1 << 20)
    header = struct.pack(
        "!IHBB16s16s", first_word, length_field, protocol, rng.choice((0, 1, 64, 255)),
        _ipv6_bytes(rng.choice(IPV6_POOL)), _ipv6_bytes(rng.choice(IPV6_POOL)))
    return header + data


def mangle(rng: random.Random, raw: bytes) -> bytes:
    r = rng.random()
    if r < 0.08 and raw:
        return raw[:rng.randrange(len(raw))]
    if r < 0.12:
        return raw + rng.randbytes(rng.randrange(1, 9))
    if r < 0.16 and raw:
        data = bytearray(raw)
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if r < 0.17:
        return rng.randbytes(rng.randrange(0, 80))
    return raw


def packet(rng: random.Random) -> bytes:
    raw = ipv4_packet(rng) if rng.random() < 0.55 else ipv6_packet(rng)
    return mangle(rng, raw)


def address_for(rng: random.Random, raw: bytes, layer: Layer = Layer.NETWORK) -> Address:
    """An address whose IPv6 bit agrees with the packet, as a backend would set it."""
    outbound = rng.random() < 0.5
    return Address(
        outbound=outbound if layer == Layer.NETWORK else False,
        loopback=outbound and rng.random() < 0.3 and layer == Layer.NETWORK,
        impostor=rng.random() < 0.1,
        ipv6=bool(raw) and raw[0] >> 4 == 6,
        if_idx=rng.choice((0, 1, 2, 7, 0xFFFFFFFF)),
        sub_if_idx=rng.choice((0, 1, 5)),
        timestamp=rng.choice((0, 1, rng.getrandbits(32), rng.getrandbits(62), -rng.getrandbits(40))),
        layer=layer,
    )


# Fields by kind, for the filter generator.
FLAG_FIELDS = (
    "outbound", "inbound", "loopback", "impostor", "fragment", "ip", "ipv6", "icmp", "icmpv6", "tcp", "udp",
    "ip.DF", "ip.MF", "tcp.Urg", "tcp.Ack", "tcp.Psh", "tcp.Rst", "tcp.Syn", "tcp.Fin",
)
NUMBER_FIELDS = (
    "zero", "timestamp", "event", "ifIdx", "subIfIdx", "length", "protocol", "localPort", "remotePort",
    "random8", "random16", "random32",
    "ip.HdrLength", "ip.TOS", "ip.Length", "ip.Id", "ip.FragOff", "ip.TTL", "ip.Protocol", "ip.Checksum",
    "ipv6.TrafficClass", "ipv6.FlowLabel", "ipv6.Length", "ipv6.NextHdr", "ipv6.HopLimit",
    "icmp.Type", "icmp.Code", "icmp.Checksum", "icmp.Body",
    "icmpv6.Type", "icmpv6.Code", "icmpv6.Checksum", "icmpv6.Body",
    "tcp.SrcPort", "tcp.DstPort", "tcp.SeqNum", "tcp.AckNum", "tcp.HdrLength", "tcp.Window", "tcp.Checksum",
    "tcp.UrgPtr", "tcp.PayloadLength", "udp.SrcPort", "udp.DstPort", "udp.Length", "udp.Checksum",
    "udp.PayloadLength",
)
ADDRESS_FIELDS = ("ip.SrcAddr", "ip.DstAddr", "ipv6.SrcAddr", "ipv6.DstAddr", "localAddr", "remoteAddr")
INDEX_FIELDS = (
    "packet", "packet16", "packet32", "tcp.Payload", "tcp.Payload16", "tcp.Payload32",
    "udp.Payload", "udp.Payload16", "udp.Payload32",
)
OPS = ("==", "=", "!=", "<", ">", "<=", ">=")
OTHER_LAYER_FIELDS = ("endpointId", "parentEndpointId", "processId", "layer", "priority")
MACROS = ("TRUE", "FALSE", "TCP", "UDP", "ICMP", "ICMPV6", "PACKET")


def _number(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.4:
        value = rng.choice((0, 1, 2, 5, 6, 17, 20, 40, 53, 64, 80, 128, 255, 443, 1000, 65535))
    elif r < 0.6:
        value = rng.getrandbits(rng.choice((8, 16, 32)))
    elif r < 0.7:
        return rng.choice(MACROS)
    elif r < 0.75:
        return str(-rng.randrange(1, 300))
    else:
        value = rng.randrange(300)
    return hex(value) if rng.random() < 0.3 else str(value)


def _address_value(rng: random.Random, field: str) -> str:
    if field.startswith("ip.") or (field in ("localAddr", "remoteAddr") and rng.random() < 0.5):
        return rng.choice(IPV4_POOL) if rng.random() < 0.9 else "::ffff:" + rng.choice(IPV4_POOL)
    return rng.choice(IPV6_POOL)


def test_text(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.25:
        text = rng.choice(FLAG_FIELDS)
        if rng.random() < 0.3:
            text += f" {rng.choice(OPS)} {_number(rng)}"
    elif r < 0.6:
        text = f"{rng.choice(NUMBER_FIELDS)} {rng.choice(OPS)} {_number(rng)}"
        if rng.random() < 0.1:
            text = rng.choice(NUMBER_FIELDS)
    elif r < 0.75:
        field = rng.choice(ADDRESS_FIELDS)
        text = f"{field} {rng.choice(OPS)} {_address_value(rng, field)}"
    else:
        field = rng.choice(INDEX_FIELDS)
        index = rng.randrange(0, 70) if rng.random() < 0.8 else rng.randrange(0, 1500)
        if rng.random() < 0.4:
            index = -index if index else -1
        suffix = "b" if rng.random() < 0.4 else ""
        text = f"{field}[{index}{suffix}] {rng.choice(OPS)} {_number(rng)}"
    if rng.random() < 0.15:
        text = ("not " if rng.random() < 0.5 else "!") + text
    return text


def filter_text(rng: random.Random, depth: int = 0, leaf=test_text) -> str:
    """A filter of `leaf(rng)` tests joined by and, or, parentheses and conditionals."""
    r = rng.random()
    if depth >= 3 or r < 0.35:
        return leaf(rng) if rng.random() < 0.95 else rng.choice(("true", "false"))
    if r < 0.6:
        return f"{filter_text(rng, depth + 1, leaf)} {rng.choice(('and', '&&'))} {filter_text(rng, depth + 1, leaf)}"
    if r < 0.8:
        return f"{filter_text(rng, depth + 1, leaf)} {rng.choice(('or', '||'))} {filter_text(rng, depth + 1, leaf)}"
    if r < 0.9:
        return f"({filter_text(rng, depth + 1, leaf)})"
    return (f"({filter_text(rng, depth + 1, leaf)} ? {filter_text(rng, depth + 1, leaf)} : "
            f"{filter_text(rng, depth + 1, leaf)})")


def broken_filter_text(rng: random.Random) -> str:
    """Mostly invalid filters: a valid one with a token dropped, doubled or mistyped, and oddities."""
    base = filter_text(rng)
    tokens = base.split(" ")
    r = rng.random()
    if r < 0.2 and len(tokens) > 1:
        del tokens[rng.randrange(len(tokens))]
    elif r < 0.35:
        i = rng.randrange(len(tokens))
        tokens.insert(i, tokens[i])
    elif r < 0.5:
        i = rng.randrange(len(tokens))
        tokens[i] = tokens[i].upper() if rng.random() < 0.5 else tokens[i].lower()
    elif r < 0.6:
        tokens.insert(rng.randrange(len(tokens) + 1), rng.choice(OTHER_LAYER_FIELDS) + " == 1")
    elif r < 0.7:
        tokens.insert(rng.randrange(len(tokens) + 1), rng.choice(("(", ")", "?", ":", "not", "[", "]", "==", "-")))
    elif r < 0.8:
        i = rng.randrange(len(tokens))
        tokens[i] = tokens[i][: rng.randrange(len(tokens[i]) + 1)]
    elif r < 0.85:
        return rng.choice(("not (tcp)", "tcp and TRUE", "event == CONNECT", "packet[70000] == 1",
                           "tcp.DstPort == 99999999999", "ip.SrcAddr == 1.2.3", "ip.SrcAddr == ::g",
                           "(tcp ? udp)", "tcp ? udp : icmp", "", "()", "packet[-0] == 1", "packet[1x] == 1"))
    else:
        i = rng.randrange(len(base) + 1)
        return base[:i] + rng.choice("()[]?:!=<>&|-.,;@#$xZ0 \t\n") + base[i:]
    return " ".join(tokens)


# The FLOW, SOCKET and REFLECT layers: events, their addresses and filters.
ENDPOINT_FLAG_FIELDS = ("outbound", "inbound", "loopback", "ip", "ipv6", "icmp", "icmpv6", "tcp", "udp", "zero")
ENDPOINT_NUMBER_FIELDS = ("event", "timestamp", "protocol", "localPort", "remotePort", "processId",
                          "endpointId", "parentEndpointId")
REFLECT_NUMBER_FIELDS = ("event", "timestamp", "processId", "layer", "priority", "zero")
EVENT_MACROS = ("ESTABLISHED", "DELETED", "BIND", "CONNECT", "LISTEN", "ACCEPT", "CLOSE", "OPEN", "PACKET",
                "NETWORK", "NETWORK_FORWARD", "FLOW", "SOCKET", "REFLECT", "TCP", "UDP", "ICMP", "ICMPV6")
# Fields valid at no event layer or only at some, to exercise the layer errors.
WRONG_LAYER_FIELDS = ("ifIdx", "tcp.DstPort", "packet[0]", "length", "impostor", "fragment", "layer", "priority",
                      "endpointId", "localPort", "ip.TTL", "random8")
PIDS = (0, 1, 4, 1234, 65535, 0xFFFFFFFF)
ENDPOINT_IDS = (0, 1, 7, 0xFFFFFFFF, 0x100000000, 0x123456789, (1 << 64) - 1)


def _event_number(rng: random.Random, field: str) -> str:
    r = rng.random()
    if r < 0.3:
        return rng.choice(EVENT_MACROS)
    if field in ("processId",) and r < 0.6:
        return str(rng.choice(PIDS))
    if field in ("endpointId", "parentEndpointId") and r < 0.7:
        value = rng.choice(ENDPOINT_IDS)
        return hex(value) if rng.random() < 0.5 else str(value)
    if field == "priority" and r < 0.7:
        return str(rng.randrange(-30005, 30006))
    return _number(rng)


def event_test_text(rng: random.Random, layer: Layer) -> str:
    r = rng.random()
    if r < 0.05:
        text = rng.choice(WRONG_LAYER_FIELDS)
        if "[" not in text and rng.random() < 0.5:
            text += f" {rng.choice(OPS)} {_number(rng)}"
    elif layer == Layer.REFLECT:
        field = rng.choice(REFLECT_NUMBER_FIELDS)
        text = field if rng.random() < 0.1 else f"{field} {rng.choice(OPS)} {_event_number(rng, field)}"
    elif r < 0.35:
        text = rng.choice(ENDPOINT_FLAG_FIELDS)
        if rng.random() < 0.3:
            text += f" {rng.choice(OPS)} {_number(rng)}"
    elif r < 0.75:
        field = rng.choice(ENDPOINT_NUMBER_FIELDS)
        text = f"{field} {rng.choice(OPS)} {_event_number(rng, field)}"
    else:
        field = rng.choice(("localAddr", "remoteAddr"))
        text = f"{field} {rng.choice(OPS)} {_address_value(rng, field)}"
    if rng.random() < 0.15:
        text = ("not " if rng.random() < 0.5 else "!") + text
    return text


def event_filter_text(rng: random.Random, layer: Layer) -> str:
    return filter_text(rng, leaf=lambda r: event_test_text(r, layer))


_LAYER_EVENTS = {
    Layer.FLOW: (Event.FLOW_ESTABLISHED, Event.FLOW_DELETED),
    Layer.SOCKET: (Event.SOCKET_BIND, Event.SOCKET_CONNECT, Event.SOCKET_LISTEN, Event.SOCKET_ACCEPT,
                   Event.SOCKET_CLOSE),
    Layer.REFLECT: (Event.REFLECT_OPEN, Event.REFLECT_CLOSE),
}


def _endpoint_address(rng: random.Random, ipv6: bool) -> int:
    if ipv6:
        return int.from_bytes(_ipv6_bytes(rng.choice(IPV6_POOL)), "big")
    return 0xFFFF00000000 | int.from_bytes(_ipv4_bytes(rng.choice(IPV4_POOL)), "big")


def event_address(rng: random.Random, layer: Layer) -> Address:
    """An event's address at `layer`, with its layer data drawn from the edges of each field."""
    ipv6 = rng.random() < 0.4
    address = Address(
        layer=layer, event=rng.choice(_LAYER_EVENTS[layer]), ipv6=ipv6 and layer != Layer.REFLECT,
        outbound=rng.random() < 0.5 and layer != Layer.REFLECT, loopback=rng.random() < 0.3 and layer != Layer.REFLECT,
        sniffed=True, timestamp=rng.choice((0, 1, rng.getrandbits(40), -rng.getrandbits(20))),
    )
    if layer == Layer.REFLECT:
        address.reflect = ReflectData(timestamp=rng.getrandbits(40), process_id=rng.choice(PIDS),
                                      layer=rng.choice(list(Layer)), flags=rng.choice((0, 1, 2, 4, 5)),
                                      priority=rng.choice((0, 1, -1, 30000, -30000, rng.randrange(-300, 300))))
    else:
        address.flow = EndpointData(
            endpoint_id=rng.choice(ENDPOINT_IDS), parent_endpoint_id=rng.choice(ENDPOINT_IDS),
            process_id=rng.choice(PIDS), local_addr=_endpoint_address(rng, ipv6),
            remote_addr=_endpoint_address(rng, ipv6), local_port=rng.choice(PORTS), remote_port=rng.choice(PORTS),
            protocol=rng.choice((6, 17, 1, 58, 0, 255)))
    return address
