"""SeqAdjuster's whole-packet side: an edit made by hand to a TCP segment, the renumbering
of the rest of its connection, and retransmissions of the edited segment."""

import ipaddress

import dpkt
import pytest

from divertgui.engine.address import Address
from divertgui.engine.packet import Packet
from divertgui.engine.rules.seq_adjust import SeqAdjuster

CLIENT = {False: "10.1.0.1", True: "fd00::1"}
SERVER = {False: "10.1.0.2", True: "fd00::2"}
REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def segment(payload=b"", seq=1000, ack=5000, ipv6=False, from_client=True, flags=dpkt.tcp.TH_ACK):
    """A TCP segment between CLIENT:40000 and SERVER:80, checksums correct."""
    ends = [CLIENT[ipv6], SERVER[ipv6]]
    src, dst = ends if from_client else ends[::-1]
    sport, dport = (40000, 80) if from_client else (80, 40000)
    tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, data=payload, win=65535)
    src, dst = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    if ipv6:
        ip = dpkt.ip6.IP6(src=src, dst=dst, nxt=dpkt.ip.IP_PROTO_TCP, hlim=64, data=tcp, plen=len(tcp))
    else:
        ip = dpkt.ip.IP(src=src, dst=dst, p=dpkt.ip.IP_PROTO_TCP, ttl=64, data=tcp)
        ip.len = len(ip)
    packet = Packet(bytes(ip), Address(outbound=from_client, ipv6=ipv6))
    packet.recalculate_checksums()
    return packet


def checksums_ok(packet) -> bool:
    fixed = Packet(bytearray(packet.raw), packet.address.copy())
    fixed.recalculate_checksums()
    return fixed.raw == packet.raw


def edit(connections, original, payload):
    edited = Packet(bytearray(original.raw), original.address.copy())
    edited.payload = payload
    edited.recalculate_checksums()
    assert connections.record_edit(original, edited)
    return edited


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("new_path", [b"/a-longer-path", b""], ids=["longer", "shorter"])
def test_the_rest_of_an_edited_connection_is_renumbered_both_ways(ipv6, new_path):
    connections = SeqAdjuster()
    request = segment(REQUEST, ipv6=ipv6)
    payload = REQUEST.replace(b"GET / ", b"GET /" + new_path.lstrip(b"/") + b" ") if new_path else \
        REQUEST.replace(b"Host: x\r\n", b"")
    delta = len(payload) - len(REQUEST)
    sent = edit(connections, request, payload)
    assert not connections.renumber(sent), "the edited segment itself keeps its numbers"
    # The server acknowledges what it received, in its numbering; the client sees its own.
    ack = segment(ack=1000 + len(REQUEST) + delta, seq=5000, ipv6=ipv6, from_client=False)
    assert connections.renumber(ack)
    assert ack.tcp.ack_num == 1000 + len(REQUEST) and checksums_ok(ack)
    # The client's next bytes move by the edit's size.
    following = segment(b"more", seq=1000 + len(REQUEST), ipv6=ipv6)
    assert connections.renumber(following)
    assert following.tcp.seq_num == 1000 + len(REQUEST) + delta and checksums_ok(following)
    # Another connection is left alone.
    other = segment(b"more", seq=1000 + len(REQUEST), ipv6=ipv6)
    other.tcp.src_port = 40001
    assert not connections.renumber(other)


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_a_retransmission_gets_the_edited_bytes_again(ipv6):
    connections = SeqAdjuster()
    payload = REQUEST.replace(b"GET / ", b"GET /x ")
    edit(connections, segment(REQUEST, ipv6=ipv6), payload)
    again = segment(REQUEST, ack=5001, ipv6=ipv6)
    assert connections.resend(again)
    assert again.payload == payload and again.tcp.seq_num == 1000 and again.tcp.ack_num == 5001
    assert checksums_ok(again)
    # Retransmitted together with the bytes that followed it: the edit, then those bytes.
    collapsed = segment(REQUEST + b"next", ipv6=ipv6)
    assert connections.resend(collapsed) and collapsed.payload == payload + b"next"
    # Part of the edited segment only: it overlaps, but its bytes cannot be redone.
    part = segment(REQUEST[:5], ipv6=ipv6)
    assert connections.resend(part) and part.payload == REQUEST[:5]
    # Later bytes are no retransmission of it.
    assert not connections.resend(segment(b"next", seq=1000 + len(REQUEST), ipv6=ipv6))


def test_bytes_added_to_an_empty_segment_come_before_the_next_data():
    connections = SeqAdjuster()
    edit(connections, segment(b""), b"inserted")
    following = segment(b"data", seq=1000)
    assert connections.renumber(following) and following.tcp.seq_num == 1000 + len(b"inserted")


def test_an_edit_that_is_not_of_one_connection_segment_is_not_kept():
    connections = SeqAdjuster()
    request = segment(REQUEST)
    moved = Packet(bytearray(request.raw), request.address.copy())
    moved.tcp.dst_port = 81
    assert not connections.record_edit(request, moved)
    assert not connections.record_edit(segment(b""), segment(b""))
    assert not connections
