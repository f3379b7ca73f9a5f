"""Set-field and payload find/replace rules, with sequence/acknowledgement fixing over a
synthetic TCP conversation."""

import dpkt
import pytest

from divertgui.engine.packet import Packet
from divertgui.engine.rules import PayloadReplace, Pipeline, SetField
from tests.unit.test_rules_conditions import A4, B4, tcp_packet, udp_packet

PSH_ACK = dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH


def _checksum_ok(packet):
    fixed = Packet(bytearray(packet.raw), packet.address.copy())
    fixed.recalculate_checksums()
    return fixed.raw == packet.raw


# -- set field ----------------------------------------------------------------------------------


def test_set_field_writes_fields_by_name_and_fixes_checksums():
    rule = SetField(fields={"ttl": 3, "dscp": 46, "tcp.window": 1234, "dst_port": 8080})
    pipeline = Pipeline([rule])
    packet = tcp_packet(b"abc")
    pipeline.process([packet], 0)
    assert packet.ip.ttl == 3 and packet.ip.dscp == 46
    assert packet.tcp.window == 1234 and packet.tcp.dst_port == 8080
    assert _checksum_ok(packet)
    assert pipeline.stats()["rules"][0]["modified"] == 1


def test_set_field_skips_packets_without_the_header_and_unchanged_values():
    pipeline = Pipeline([SetField(fields={"tcp.window": 100, "ip.ttl": 64})])
    udp = udp_packet()
    before = udp.raw
    pipeline.process([udp], 0)
    assert udp.raw == before
    assert pipeline.stats()["rules"][0]["modified"] == 0


def test_set_field_on_ipv6_hop_limit_and_dscp():
    ip6 = dpkt.ip6.IP6(src=bytes(15) + b"\1", dst=bytes(15) + b"\2", nxt=17, hlim=64,
                       data=dpkt.udp.UDP(sport=1, dport=2, data=b"hi", ulen=10))
    ip6.plen = 10
    packet = Packet(bytes(ip6))
    Pipeline([SetField(fields={"ttl": 5, "dscp": 10})]).process([packet], 0)
    assert packet.ipv6.hop_limit == 5 and packet.ipv6.traffic_class >> 2 == 10
    assert _checksum_ok(packet)


def test_set_field_addresses():
    packet = udp_packet()
    Pipeline([SetField(fields={"ip.dst_addr": "10.9.9.9"})]).process([packet], 0)
    assert packet.dst_addr == "10.9.9.9" and _checksum_ok(packet)


# -- payload find/replace -----------------------------------------------------------------------


@pytest.mark.parametrize("mode, find, replace", [
    ("text", "hello", "HELLO!!"),
    ("hex", "68 65 6c 6c 6f", "48454c4c4f2121"),
    ("regex", r"h(el)lo", r"H\1LO!!"),
])
def test_payload_replace_modes(mode, find, replace):
    packet = udp_packet(b"say hello, hello")
    Pipeline([PayloadReplace(find=find, replace=replace, mode=mode, count=1)]).process([packet], 0)
    expected = b"say HELLO!!, hello" if mode != "regex" else b"say HelLO!!, hello"
    assert packet.payload == expected
    assert packet.udp.length == 8 + len(expected) and packet.ip.length == 28 + len(expected)
    assert _checksum_ok(packet)


class Conversation:
    """A client (A, port 40000) and a server (B, port 80) exchanging segments through a pipeline
    that sits at the client: the server's packets are inbound, the client's outbound.
    Each side keeps its own view of the byte stream, as TCP does."""

    def __init__(self, pipeline):
        self.pipeline = pipeline
        self.server_next, self.client_next = 5000, 1000     # next seq each side sends
        self.client_received = b""      # what the client got, after the rules
        self.client_expects = 5000      # seq of the next byte the client has not received
        self.server_acked = 1000

    def server_sends(self, payload, flags=PSH_ACK):
        packet = tcp_packet(payload, seq=self.server_next, ack=self.client_next, flags=flags, outbound=False,
                            sport=80, dport=40000, src=B4, dst=A4)
        self.server_next += len(payload) + (1 if flags & dpkt.tcp.TH_FIN else 0)
        return self.deliver(packet)

    def retransmit(self, seq, payload):
        packet = tcp_packet(payload, seq=seq, ack=self.client_next, flags=PSH_ACK, outbound=False,
                            sport=80, dport=40000, src=B4, dst=A4)
        return self.deliver(packet)

    def deliver(self, packet):
        out = self.pipeline.process([packet], 0)
        assert out == [packet] and _checksum_ok(packet)
        tcp = packet.tcp
        if tcp.seq_num == self.client_expects:
            self.client_received += packet.payload
            self.client_expects += len(packet.payload) + (1 if tcp.fin else 0)
        return packet

    def client_acks(self, flags=dpkt.tcp.TH_ACK, sack=None):
        packet = tcp_packet(b"", seq=self.client_next, ack=self.client_expects, flags=flags, outbound=True)
        if sack is not None:
            packet.tcp.sack = sack
            packet.recalculate_checksums()
        self.client_next += 1 if flags & dpkt.tcp.TH_FIN else 0
        out = self.pipeline.process([packet], 0)
        assert out == [packet] and _checksum_ok(packet)
        self.server_acked = packet.tcp.ack_num
        return packet


def test_payload_replace_keeps_a_tcp_connection_consistent():
    rule = PayloadReplace(filter="tcp.SrcPort == 80", direction="inbound", find="hello", replace="HELLO!!")
    talk = Conversation(Pipeline([rule]))
    chunks = [b"hello world\n", b"nothing here\n", b"hello hello\n", b"bye\n"]
    for chunk in chunks:
        talk.server_sends(chunk)
        talk.client_acks()
        # The server sees acknowledgements of exactly what it sent, in its own numbering.
        assert talk.server_acked == talk.server_next
    talk.server_sends(b"", flags=dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK)
    talk.client_acks(flags=dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK)
    assert talk.server_acked == talk.server_next
    assert talk.client_received == b"".join(chunks).replace(b"hello", b"HELLO!!")
    stats = talk.pipeline.stats()["rules"][0]
    assert stats["modified"] == 2 and stats["seq_adjusted"] > 0


def test_a_retransmitted_segment_gets_the_same_edit():
    rule = PayloadReplace(direction="inbound", find="hello", replace="hi")
    talk = Conversation(Pipeline([rule]))
    first = talk.server_sends(b"hello there")
    first_seq, first_payload = first.tcp.seq_num, first.payload
    talk.server_sends(b"more")
    again = talk.retransmit(5000, b"hello there")
    assert (again.tcp.seq_num, again.payload) == (first_seq, first_payload)
    talk.client_acks()
    assert talk.server_acked == talk.server_next
    assert talk.client_received == b"hi theremore"


def test_shrinking_replacements_and_sack_blocks_are_mapped_back():
    rule = PayloadReplace(direction="inbound", find="long-word", replace="w")
    talk = Conversation(Pipeline([rule]))
    talk.server_sends(b"a long-word")
    second = talk.server_sends(b"second")
    # The client acknowledges only the first segment and SACKs the second (in its numbering).
    left = second.tcp.seq_num
    ack = tcp_packet(b"", seq=talk.client_next, ack=left, outbound=True)
    ack.tcp.sack = [(left, left + 6)]
    ack.recalculate_checksums()
    talk.pipeline.process([ack], 0)
    assert ack.tcp.ack_num == 5000 + len(b"a long-word")
    assert ack.tcp.sack == [(5000 + 11, 5000 + 17)]
    assert _checksum_ok(ack)


def test_untouched_connections_are_not_tracked():
    rule = PayloadReplace(find="absent", replace="x")
    pipeline = Pipeline([rule])
    packet = tcp_packet(b"nothing to see")
    before = packet.raw
    pipeline.process([packet], 0)
    assert packet.raw == before and not rule.connections.tracked(rule.connections.key(packet))
