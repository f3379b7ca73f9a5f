"""The one module that builds answers to a packet: its numbers and directions."""

import struct

import pytest

from divertgui.engine import replies
from divertgui.engine.address import Address, Layer
from divertgui.engine.packet import Packet


def _tcp_packet(flags: int, payload: bytes = b"", **address) -> Packet:
    segment = struct.pack("!HHIIBBHHH", 5555, 80, 1000, 2000, 5 << 4, flags, 100, 0, 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(segment), 1, 0, 64, 6, 0,
                         bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    packet = Packet(header + segment, Address(if_idx=3, **address))
    packet.recalculate_checksums()
    return packet


def test_a_syn_is_refused_with_its_sequence_acknowledged():
    reset = replies.tcp_reset(_tcp_packet(0x02, outbound=False))
    assert reset.ipv4.src_addr == "10.0.0.2" and reset.ipv4.dst_addr == "10.0.0.1"
    assert (reset.tcp.src_port, reset.tcp.dst_port) == (80, 5555)
    assert reset.tcp.rst and reset.tcp.ack and reset.tcp.ack_num == 1001 and reset.tcp.seq_num == 0
    assert reset.address.outbound and reset.address.if_idx == 3
    before = bytes(reset.raw)
    assert reset.recalculate_checksums() and bytes(reset.raw) == before  # checksums were right


def test_data_is_refused_at_the_acknowledged_sequence():
    reset = replies.tcp_reset(_tcp_packet(0x18, b"hello", outbound=False))
    assert reset.tcp.rst and reset.tcp.seq_num == 2000 and reset.tcp.ack_num == 1005
    assert replies.tcp_reset(_tcp_packet(0x04)) is None  # never a RST for a RST


@pytest.mark.parametrize("address, outbound", [
    (dict(outbound=True), False),                                   # left this host: answered inbound
    (dict(outbound=False), True),                                   # arrived: answered outbound
    (dict(outbound=True, loopback=True), True),                     # loopback: outbound both ways
    (dict(outbound=True, layer=Layer.NETWORK_FORWARD), True),       # forwarded: forwarded back
])
def test_answers_go_the_way_the_sender_receives_them(address, outbound):
    packet = _tcp_packet(0x18, b"GET / HTTP/1.1\r\n\r\n", **address)
    for answer in (replies.tcp_reset(packet), replies.icmp_unreachable(packet),
                   replies.tcp_data_reply(packet, b"page")):
        assert answer.address.outbound == outbound
    onward = replies.tcp_reset_onward(packet)
    assert onward.address.outbound == packet.address.outbound
    assert (onward.ipv4.dst_addr, onward.tcp.dst_port, onward.tcp.seq_num) == ("10.0.0.2", 80, 1000)


def test_a_data_reply_follows_what_the_packet_carried():
    reply = replies.tcp_data_reply(_tcp_packet(0x18, b"GET /", outbound=True), b"page")
    assert (reply.tcp.seq_num, reply.tcp.ack_num, reply.payload) == (2000, 1005, b"page")
    assert reply.tcp.fin and reply.tcp.ack and reply.tcp.psh


def test_icmp_unreachable_quotes_the_packet():
    datagram = struct.pack("!HHHH", 5353, 53, 12, 0) + b"abcd"
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(datagram), 1, 0, 64, 17, 0,
                         bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    original = Packet(header + datagram, Address(outbound=False))
    reply = replies.icmp_unreachable(original)
    assert (reply.icmpv4.type, reply.icmpv4.code) == (3, 3)
    assert bytes(reply.raw[28:]) == bytes(original.raw[:28])
    assert reply.ipv4.dst_addr == "10.0.0.1"


@pytest.mark.parametrize("raw", [b"", bytes.fromhex("45f9003571971d7b80ff9c"), bytes(40)])
def test_only_an_ip_packet_can_be_answered(raw):
    with pytest.raises(ValueError, match="only an IP packet"):
        replies.icmp_unreachable(Packet(raw))


def test_the_reset_rule_sends_onward_what_webfilter_sends():
    from divertgui.engine.rules.pipeline import Pipeline
    from divertgui.engine.rules.reset import Reset
    packet = _tcp_packet(0x18, b"GET / HTTP/1.1\r\n\r\n", outbound=True)
    onward = replies.tcp_reset_onward(packet)
    forward, _back = Pipeline([Reset(chance=100.0)]).process([packet], 0)
    assert bytes(forward.raw) == bytes(onward.raw) and forward.address.outbound == onward.address.outbound
    assert onward.tcp.rst and onward.tcp.ack and onward.payload == b""
