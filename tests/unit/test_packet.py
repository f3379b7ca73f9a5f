"""Packet views: every writable field lands in the right bits of the bytes,
payload and option edits resize the packet consistently, and malformed
bytes never make Packet() or its views raise."""

from __future__ import annotations

import ipaddress
import random
import struct

import dpkt
import pytest

from divertgui.engine.address import Address
from divertgui.engine.packet import Packet, encode_tcp_options, tcp_options
from tests import oracle, packet_gen

SRC4, DST4 = "10.0.0.1", "192.168.7.9"
SRC6, DST6 = "2001:db8::1", "fe80::abcd:1"


def ipv4(protocol: int, body: bytes, options: bytes = b"") -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | (5 + len(options) // 4), 0x2E, 20 + len(options) + len(body),
                         0x1234, 0x4000, 64, protocol, 0, ipaddress.IPv4Address(SRC4).packed,
                         ipaddress.IPv4Address(DST4).packed)
    return header + options + body


def ipv6(next_header: int, body: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28 | 0xA5 << 20 | 0x12345, len(body), next_header, 64,
                       ipaddress.IPv6Address(SRC6).packed, ipaddress.IPv6Address(DST6).packed) + body


def tcp(payload: bytes = b"", options: bytes = b"", flags: int = 0x18) -> bytes:
    return struct.pack("!HHIIBBHHH", 40000, 80, 1000, 2000, (5 + len(options) // 4) << 4, flags,
                       8192, 0, 0) + options + payload


def udp(payload: bytes = b"") -> bytes:
    return struct.pack("!HHHH", 5000, 53, 8 + len(payload), 0) + payload


def icmp(payload: bytes = b"") -> bytes:
    return struct.pack("!BBHHH", 8, 0, 0, 7, 1) + payload


# Each field: (view, name, header offset, size in bytes, mask, shift), from the RFCs' diagrams.
FIELDS = [
    ("ip", "version", 0, 1, 0xF, 4), ("ip", "hdr_len", 0, 1, 0xF, 0), ("ip", "tos", 1, 1, 0xFF, 0),
    ("ip", "dscp", 1, 1, 0x3F, 2), ("ip", "ecn", 1, 1, 0x3, 0), ("ip", "length", 2, 2, 0xFFFF, 0),
    ("ip", "id", 4, 2, 0xFFFF, 0), ("ip", "flags", 6, 1, 0x7, 5), ("ip", "reserved_flag", 6, 2, 1, 15),
    ("ip", "df", 6, 2, 1, 14), ("ip", "mf", 6, 2, 1, 13), ("ip", "frag_offset", 6, 2, 0x1FFF, 0),
    ("ip", "ttl", 8, 1, 0xFF, 0), ("ip", "protocol", 9, 1, 0xFF, 0), ("ip", "checksum", 10, 2, 0xFFFF, 0),
    ("ipv6", "version", 0, 4, 0xF, 28), ("ipv6", "traffic_class", 0, 4, 0xFF, 20),
    ("ipv6", "flow_label", 0, 4, 0xFFFFF, 0), ("ipv6", "length", 4, 2, 0xFFFF, 0),
    ("ipv6", "next_hdr", 6, 1, 0xFF, 0), ("ipv6", "hop_limit", 7, 1, 0xFF, 0),
    ("tcp", "src_port", 0, 2, 0xFFFF, 0), ("tcp", "dst_port", 2, 2, 0xFFFF, 0),
    ("tcp", "seq_num", 4, 4, 0xFFFFFFFF, 0), ("tcp", "ack_num", 8, 4, 0xFFFFFFFF, 0),
    ("tcp", "hdr_len", 12, 1, 0xF, 4), ("tcp", "reserved", 12, 1, 0x7, 1), ("tcp", "ns", 12, 1, 1, 0),
    ("tcp", "flags", 13, 1, 0xFF, 0), ("tcp", "cwr", 13, 1, 1, 7), ("tcp", "ece", 13, 1, 1, 6),
    ("tcp", "urg", 13, 1, 1, 5), ("tcp", "ack", 13, 1, 1, 4), ("tcp", "psh", 13, 1, 1, 3),
    ("tcp", "rst", 13, 1, 1, 2), ("tcp", "syn", 13, 1, 1, 1), ("tcp", "fin", 13, 1, 1, 0),
    ("tcp", "window", 14, 2, 0xFFFF, 0), ("tcp", "checksum", 16, 2, 0xFFFF, 0),
    ("tcp", "urg_ptr", 18, 2, 0xFFFF, 0),
    ("udp", "src_port", 0, 2, 0xFFFF, 0), ("udp", "dst_port", 2, 2, 0xFFFF, 0),
    ("udp", "length", 4, 2, 0xFFFF, 0), ("udp", "checksum", 6, 2, 0xFFFF, 0),
    ("icmp", "type", 0, 1, 0xFF, 0), ("icmp", "code", 1, 1, 0xFF, 0), ("icmp", "checksum", 2, 2, 0xFFFF, 0),
    ("icmp", "body", 4, 4, 0xFFFFFFFF, 0),
    ("icmpv6", "type", 0, 1, 0xFF, 0), ("icmpv6", "code", 1, 1, 0xFF, 0),
    ("icmpv6", "checksum", 2, 2, 0xFFFF, 0), ("icmpv6", "body", 4, 4, 0xFFFFFFFF, 0),
]

SAMPLES = {
    "ip": lambda: ipv4(6, tcp(b"data")),
    "ipv6": lambda: ipv6(17, udp(b"data")),
    "tcp": lambda: ipv6(6, tcp(b"payload", options=bytes([2, 4, 5, 0xB4]))),
    "udp": lambda: ipv4(17, udp(b"q")),
    "icmp": lambda: ipv4(1, icmp(b"ping")),
    "icmpv6": lambda: ipv6(58, icmp(b"ping")),
}


@pytest.mark.parametrize("view, name, offset, size, mask, shift", FIELDS,
                         ids=[f"{v}.{n}" for v, n, *_ in FIELDS])
def test_every_field_round_trips_in_its_bits(view, name, offset, size, mask, shift):
    rng = random.Random(f"{view}.{name}")
    for _ in range(20):
        raw = SAMPLES[view]()
        packet = Packet(raw)
        header = getattr(packet, view)
        start = header.offset + offset
        value = rng.randrange(mask + 1)
        setattr(header, name, value)
        after = packet.raw
        word = int.from_bytes(after[start:start + size], "big")
        assert (word >> shift) & mask == value
        old_word = int.from_bytes(raw[start:start + size], "big")
        assert word & ~(mask << shift) == old_word & ~(mask << shift), "other bits of the word changed"
        assert after[:start] == raw[:start] and after[start + size:] == raw[start + size:]
        assert getattr(getattr(Packet(after), view) or header, name) == (bool(value) if mask == 1 else value)


@pytest.mark.parametrize("view, name", [("ip", "ttl"), ("tcp", "src_port"), ("udp", "length"), ("icmp", "type")])
def test_out_of_range_values_are_refused_with_the_field_name(view, name):
    packet = Packet(SAMPLES[view]())
    before = packet.raw
    with pytest.raises(ValueError, match=name):
        setattr(getattr(packet, view), name, 1 << 32)
    with pytest.raises(ValueError, match=name):
        setattr(getattr(packet, view), name, -1)
    with pytest.raises(TypeError, match=name):
        setattr(getattr(packet, view), name, "7")
    assert packet.raw == before


def test_addresses_read_and_write_as_text():
    packet = Packet(ipv4(6, tcp()))
    assert (packet.ip.src_addr, packet.ip.dst_addr) == (SRC4, DST4)
    packet.ip.src_addr = "1.2.3.4"
    packet.dst_addr = ipaddress.IPv4Address("5.6.7.8")
    assert packet.raw[12:20] == bytes([1, 2, 3, 4, 5, 6, 7, 8])
    with pytest.raises(ValueError, match="src_addr"):
        packet.ip.src_addr = "::1"

    packet6 = Packet(ipv6(17, udp()))
    assert (packet6.src_addr, packet6.dst_addr) == (SRC6, DST6)
    packet6.ipv6.dst_addr = "::ffff:10.0.0.1"
    packet6.src_addr = "2001:db8::2"
    assert packet6.raw[8:40] == (ipaddress.IPv6Address("2001:db8::2").packed
                                 + ipaddress.IPv6Address("::ffff:10.0.0.1").packed)


def test_views_agree_with_dpkt():
    raw = ipv4(6, tcp(b"hello", options=bytes([2, 4, 5, 0xB4])))
    packet = Packet(raw)
    parsed = dpkt.ip.IP(raw)
    assert (packet.ip.ttl, packet.ip.id, packet.ip.df, packet.ip.length) == \
        (parsed.ttl, parsed.id, parsed.df, parsed.len)
    assert (packet.tcp.src_port, packet.tcp.dst_port, packet.tcp.seq_num, packet.tcp.ack_num) == \
        (parsed.data.sport, parsed.data.dport, parsed.data.seq, parsed.data.ack)
    assert packet.tcp.window == parsed.data.win and packet.payload == parsed.data.data == b"hello"


def test_views_are_none_when_the_header_is_absent():
    packet = Packet(ipv4(17, udp(b"x")))
    assert packet.ip is not None and packet.udp is not None
    assert packet.ipv6 is None and packet.tcp is None and packet.icmp is None and packet.icmpv6 is None
    # ICMP inside IPv6 and ICMPv6 inside IPv4 are not decoded, as in WinDivert.
    assert Packet(ipv6(1, icmp())).icmp is None
    assert Packet(ipv4(58, icmp())).icmpv6 is None
    # A non-first fragment has no transport header.
    fragment = bytearray(ipv4(6, tcp()))
    fragment[6:8] = b"\x00\x10"
    assert Packet(fragment).tcp is None and Packet(fragment).ip.frag_offset == 16
    empty = Packet(b"")
    assert (empty.ip, empty.ipv6, empty.tcp, empty.udp, empty.payload, empty.src_addr, empty.src_port,
            empty.protocol) == (None,) * 8


def test_payload_set_with_another_length_resizes_the_packet():
    packet = Packet(ipv4(17, udp(b"short")))
    packet.payload = b"a much longer payload"
    parsed = dpkt.ip.IP(packet.raw)
    assert parsed.len == len(packet) == 20 + 8 + 21
    assert parsed.data.ulen == 8 + 21 and packet.udp.length == 29
    assert packet.payload == b"a much longer payload"

    packet6 = Packet(ipv6(6, tcp(b"0123456789")))
    packet6.payload = b"xy"
    assert packet6.ipv6.length == 22 and len(packet6) == 62 and packet6.payload == b"xy"
    packet6.payload = b""
    assert packet6.ipv6.length == 20 and packet6.payload == b""

    with pytest.raises(ValueError, match="payload"):
        Packet(b"garbage").payload = b"x"
    with pytest.raises(ValueError, match="longer than IP allows"):
        Packet(ipv4(17, udp())).payload = bytes(70000)


def test_payload_edit_keeps_bytes_after_the_ip_length():
    raw = ipv4(17, udp(b"abc")) + b"TRAILER"
    packet = Packet(raw)
    assert packet.payload == b"abc"
    packet.payload = b"abcdef"
    assert packet.raw.endswith(b"abcdefTRAILER") and packet.ip.length == 20 + 8 + 6


def test_fix_lengths_and_checksums_match_the_reference():
    packet = Packet(ipv4(17, udp(b"abc")), Address(ip_checksum=False, udp_checksum=False))
    packet.raw = packet.raw + b"more"     # grown without touching the length fields
    assert packet.fix_lengths_and_checksums() is True
    assert packet.ip.length == len(packet) and packet.udp.length == len(packet) - 20
    assert packet.address.ip_checksum and packet.address.udp_checksum
    if oracle.AVAILABLE:
        assert packet.raw == oracle.calc_checksums(packet.raw)
    parsed = dpkt.ip.IP(packet.raw)
    assert parsed.data.data == b"abcmore"

    packet6 = Packet(ipv6(6, tcp(b"x")))
    packet6.raw = packet6.raw[:-1]
    packet6.fix_lengths()
    assert packet6.ipv6.length == len(packet6) - 40
    assert packet6.recalculate_checksums() is True
    with pytest.raises(ValueError, match="lengths"):
        Packet(b"\x00").fix_lengths()


def test_tcp_options_decode_and_rewrite():
    options = bytes([2, 4, 5, 0xB4, 1, 3, 3, 7, 4, 2, 8, 10]) + (1).to_bytes(4, "big") + (2).to_bytes(4, "big")
    packet = Packet(ipv4(6, tcp(b"data", options=options, flags=0x02)))
    view = packet.tcp
    assert (view.mss, view.window_scale, view.sack_permitted, view.timestamps, view.sack) == \
        (1460, 7, True, (1, 2), None)
    assert [o.kind for o in view.option_list] == [2, 1, 3, 4, 8]

    view.mss = 1200                       # same size: rewritten in place
    assert packet.raw[42:44] == (1200).to_bytes(2, "big") and len(packet) == 20 + 20 + len(options) + 4
    view.sack = [(100, 200), (300, 400)]  # a new option: the header grows
    tcp_view = packet.tcp
    assert tcp_view.sack == [(100, 200), (300, 400)] and tcp_view.mss == 1200
    assert tcp_view.hdr_len * 4 == tcp_view.header_len == 20 + len(tcp_view.options)
    assert packet.ip.length == len(packet) and packet.payload == b"data"
    tcp_view.timestamps = None
    tcp_view.sack_permitted = False
    assert packet.tcp.timestamps is None and packet.tcp.sack_permitted is False
    assert packet.tcp.window_scale == 7 and packet.payload == b"data"
    parsed = dpkt.ip.IP(packet.raw)
    assert parsed.data.data == b"data" and parsed.len == len(packet)
    with pytest.raises(ValueError, match="multiple of 4"):
        packet.tcp.options = b"\x01"


def test_tcp_option_codec_round_trips():
    rng = random.Random(3)
    for _ in range(200):
        pairs = [(kind, rng.randbytes(size)) for kind, size in
                 rng.sample([(2, 2), (3, 1), (4, 0), (5, 8), (8, 8), (30, 5)], rng.randrange(1, 4))]
        encoded = encode_tcp_options(pairs)
        assert len(encoded) % 4 == 0
        decoded = [(o.kind, o.data) for o in tcp_options(encoded) if o.kind != 0]
        assert decoded == pairs


def test_ipv4_options_resize_the_header():
    packet = Packet(ipv4(17, udp(b"x")))
    packet.ip.options = bytes([148, 4, 0, 0])
    assert packet.ip.hdr_len == 6 and packet.ip.length == len(packet) == 24 + 9
    assert packet.udp.src_port == 5000 and packet.payload == b"x"
    packet.ip.options = b""
    assert packet.ip.hdr_len == 5 and len(packet) == 29 and packet.payload == b"x"
    with pytest.raises(ValueError, match="IPv4 options"):
        packet.ip.options = bytes(44)


def test_ipv6_extension_headers_are_decoded_and_writable():
    body = udp(b"dns")
    destination = bytes([17, 0, 1, 4, 0, 0, 0, 0])             # PadN
    fragment = bytes([60, 0, 0x00, 0x01, 0xDE, 0xAD, 0xBE, 0xEF])  # offset 0, more fragments
    routing = bytes([44, 0, 0, 0, 0, 0, 0, 0])
    hop_by_hop = bytes([43, 0, 5, 2, 0, 0, 1, 0])               # router alert, Pad1... as TLVs
    raw = ipv6(0, hop_by_hop + routing + fragment + destination + body)
    packet = Packet(raw)
    six = packet.ipv6
    kinds = [h.header_type for h in six.extension_headers]
    assert kinds == [0, 43, 44, 60]
    assert [o.type for o in six.hop_by_hop.options] == [5, 1]
    assert six.routing.routing_type == 0 and six.routing.segments_left == 0
    assert (six.fragment.frag_offset, six.fragment.mf, six.fragment.id) == (0, True, 0xDEADBEEF)
    assert six.dest_options.next_hdr == 17
    assert packet.udp is not None and packet.payload == b"dns" and packet.protocol == 17

    six.fragment.id = 0x01020304
    six.routing.segments_left = 3
    assert packet.raw[60:64] == bytes([1, 2, 3, 4]) and packet.raw[51] == 3
    six.fragment.frag_offset = 100
    assert packet.raw[58:60] == (100 << 3 | 1).to_bytes(2, "big")
    assert packet.udp is None, "a non-first fragment has no transport header"
    assert packet.ipv6.fragment.frag_offset == 100


def test_conveniences():
    address = Address(outbound=True, loopback=True)
    packet = Packet(ipv4(6, tcp()), address)
    assert packet.ticket == 0 and packet.address is address
    assert packet.direction == "outbound" and packet.is_outbound and packet.is_loopback
    assert (packet.src_port, packet.dst_port, packet.protocol) == (40000, 80, 6)
    packet.src_port, packet.dst_port = 1, 2
    assert packet.raw[20:24] == bytes([0, 1, 0, 2])
    assert Packet(ipv6(17, udp()), Address()).direction == "inbound"
    assert Packet(ipv6(17, udp())).address.ipv6 is True
    with pytest.raises(ValueError, match="TCP or UDP"):
        Packet(ipv4(1, icmp())).src_port = 5
    assert Packet(ipv4(1, icmp())).src_port is None
    ticketed = Packet(b"", ticket=42)
    assert ticketed.ticket == 42 and isinstance(ticketed.raw, bytes)


def test_a_bytearray_is_edited_in_place():
    buffer = bytearray(ipv4(6, tcp()))
    packet = Packet(buffer)
    packet.ip.ttl = 5
    assert buffer[8] == 5
    copy_source = bytes(buffer)
    Packet(copy_source).ip.ttl = 9
    assert copy_source[8] == 5


def test_buffer_is_the_packets_own_bytes():
    packet = Packet(ipv4(6, tcp()))
    assert packet.buffer is packet.buffer and isinstance(packet.buffer, bytearray)
    packet.buffer[8] = 7
    assert packet.ip.ttl == 7 and packet.raw[8] == 7
    packet.ip.ttl = 3
    assert packet.buffer[8] == 3
    assert isinstance(packet.raw, bytes) and packet.raw is not packet.buffer


def test_decrement_ttl_method():
    packet = Packet(ipv4(6, tcp()))
    packet.recalculate_checksums()
    assert packet.decrement_ttl() is True and packet.ip.ttl == 63
    packet.ip.ttl = 1
    assert packet.decrement_ttl() is False


def _touch_everything(packet: Packet) -> None:
    for name in ("ip", "ipv6", "icmp", "icmpv6", "tcp", "udp"):
        view = getattr(packet, name)
        if view is None:
            continue
        repr(view)
        view.raw
        if name == "ip":
            view.options
        if name == "ipv6":
            for header in view.extension_headers:
                repr(header)
                header.data
                getattr(header, "options", None)
            view.hop_by_hop, view.routing, view.fragment, view.dest_options
        if name == "tcp":
            view.option_list, view.mss, view.window_scale, view.sack_permitted, view.sack, view.timestamps
    packet.payload, packet.src_addr, packet.dst_addr, packet.src_port, packet.dst_port, packet.protocol
    repr(packet)


def test_malformed_bytes_never_raise():
    rng = random.Random(1234)
    for _ in range(10000):
        _touch_everything(Packet(packet_gen.packet(rng)))
    for _ in range(10000):
        raw = bytearray(rng.randbytes(rng.randrange(0, 90)))
        if raw and rng.random() < 0.7:
            raw[0] = rng.choice((0x45, 0x46, 0x4F, 0x60, 0x6F, 0x40))
        _touch_everything(Packet(bytes(raw)))


def test_writes_on_generated_packets_keep_them_parsable():
    rng = random.Random(77)
    edited = 0
    for _ in range(1500):
        raw = packet_gen.packet(rng)
        packet = Packet(raw)
        if packet.tcp is not None and packet.tcp.header_len == packet.tcp.hdr_len * 4:
            packet.tcp.window = 1234
            packet.payload = b"new payload"
            assert packet.tcp.window == 1234 and packet.payload == b"new payload"
            edited += 1
        elif packet.udp is not None:
            packet.udp.dst_port = 9
            packet.payload = b""
            assert packet.udp.dst_port == 9 and packet.payload == b""
            edited += 1
        elif packet.tcp is not None:
            # The header claims bytes it does not have: new payload bytes count as header bytes.
            end, missing = packet.tcp.offset + packet.tcp.header_len, packet.tcp.hdr_len * 4 - packet.tcp.header_len
            packet.payload = b"new"
            assert packet.raw[end:end + 3] == b"new" and packet.payload == b"new"[missing:]
    assert edited > 500
