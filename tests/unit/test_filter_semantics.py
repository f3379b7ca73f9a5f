import struct

import pytest

from divertgui.engine.address import Address
from divertgui.engine.filter import eval_filter

TCP = struct.pack("!HHIIBBHHH", 1234, 80, 1, 2, 5 << 4, 0x02, 1000, 0, 0) + b"GET"
UDP = struct.pack("!HHHH", 53, 5353, 11, 0) + b"xyz"


def ipv4(payload: bytes, protocol: int) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0x4000, 64, protocol, 0,
                       b"\x0a\0\0\1", b"\x0a\0\0\2") + payload


TCP4, UDP4 = ipv4(TCP, 6), ipv4(UDP, 17)
OUT = Address(outbound=True)


@pytest.mark.parametrize("text, raw, expected", [
    ("tcp.DstPort == 80", TCP4, True),
    ("tcp.DstPort == 80", UDP4, False),
    ("not tcp.DstPort == 80", UDP4, False),
    ("tcp.DstPort != 80", UDP4, False),
    ("ip.SrcAddr == ::ffff:10.0.0.1", TCP4, True),
    ("ip.SrcAddr < 10.0.0.2", TCP4, True),
    ("false and true or true", TCP4, True),
    ("true or true and false", TCP4, True),
    ("localAddr == 10.0.0.1 and remotePort == 80", TCP4, True),
    ("tcp.Payload[0] == 0x47 and tcp.Payload16[-1] == 0x4554", TCP4, True),
    ("tcp.Payload[3] == 0", TCP4, False),
    ("packet[-1b] == 0x54", TCP4, True),
    ("(tcp ? tcp.Syn : udp.DstPort == 5353)", UDP4, True),
    ("outbound and not loopback", TCP4, True),
    ("ip.DF and not ip.MF and not fragment", TCP4, True),
])
def test_examples(text, raw, expected):
    assert eval_filter(text, raw, OUT) is expected


def test_unparsable_packet_matches_nothing():
    assert eval_filter("true", b"\x45\0\0", OUT) is False


def test_reference_folding_of_impossible_tests():
    # The reference turns an impossible test into "not tcp": true for UDP packets.
    assert eval_filter("tcp.DstPort > 65535", UDP4, OUT) is True
    assert eval_filter("tcp.DstPort > 65535", TCP4, OUT) is False
