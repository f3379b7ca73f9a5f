import random
import struct

import pytest

from divertgui.engine.address import Address
from divertgui.engine.headers import parse_headers
from tests import packet_gen


def ipv4(payload: bytes, protocol: int = 6, length: int | None = None, flags_offset: int = 0) -> bytes:
    total = 20 + len(payload) if length is None else length
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, flags_offset, 64, protocol, 0,
                       b"\x0a\0\0\1", b"\x0a\0\0\2") + payload


def ipv6(payload: bytes, next_header: int) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), next_header, 64, b"\0" * 15 + b"\1",
                       b"\0" * 15 + b"\2") + payload


TCP = struct.pack("!HHIIBBHHH", 1234, 80, 1, 2, 5 << 4, 0x18, 1000, 0, 0)


def test_tcp_over_ipv4():
    layout = parse_headers(ipv4(TCP + b"abc"))
    assert (layout.version, layout.transport, layout.transport_offset, layout.payload_len) == (4, 6, 20, 3)


def test_length_field_shorter_than_data_limits_the_payload():
    layout = parse_headers(ipv4(TCP + b"abc", length=40))
    assert layout.ip_total_len == 40 and layout.payload_len == 0


def test_non_first_fragment_has_no_transport_header():
    layout = parse_headers(ipv4(TCP, flags_offset=1))
    assert layout.fragment and layout.transport_offset == -1 and layout.protocol == 6


def test_first_fragment_keeps_its_transport_header():
    layout = parse_headers(ipv4(TCP, flags_offset=0x2000))
    assert layout.fragment and layout.more_fragments and layout.transport == 6


def test_tcp_header_length_is_capped_to_the_data():
    raw = ipv4(TCP[:12] + bytes([15 << 4]) + TCP[13:] + b"abcd")
    layout = parse_headers(raw)
    assert layout.transport_len == 24 and layout.payload_len == 0


def test_ipv6_extension_headers_are_walked():
    hop = bytes([44, 0]) + b"\0" * 6
    fragment = struct.pack("!BBHI", 6, 0, 0, 7)
    layout = parse_headers(ipv6(hop + fragment + TCP, next_header=0))
    assert layout.ext_headers == ((0, 40, 8), (44, 48, 8))
    assert layout.fragment and layout.transport == 6 and layout.transport_offset == 56


@pytest.mark.parametrize("raw", [b"", b"\x45", b"\x45" + b"\0" * 18, b"\x44" + b"\0" * 39, b"\x55" + b"\0" * 39,
                                 b"\x60" + b"\0" * 38])
def test_unparsable_packets(raw):
    assert parse_headers(raw) is None


def test_agrees_with_the_reference_on_generated_packets(reference):
    rng = random.Random(2)
    for _ in range(1500):
        raw = packet_gen.packet(rng)
        address = Address(ipv6=bool(raw) and raw[0] >> 4 == 6)
        layout = parse_headers(raw)
        assert (layout is None) == (reference.eval("true", raw, address) is None), raw.hex()
        if layout is None:
            continue
        expected = {
            "tcp": layout.transport == 6, "udp": layout.transport == 17, "icmp": layout.transport == 1,
            "icmpv6": layout.transport == 58, "fragment": layout.fragment,
            f"protocol == {layout.protocol}": True,
            f"tcp.PayloadLength == {layout.payload_len}": layout.transport == 6,
            f"udp.PayloadLength == {layout.payload_len}": layout.transport == 17,
        }
        for text, value in expected.items():
            assert reference.eval(text, raw, address) == value, (text, raw.hex())
