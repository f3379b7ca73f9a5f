"""Splitting an oversized TCP segment into segments that fit."""

from __future__ import annotations

import collections
import socket
import struct

import pytest

from divertgui.engine.checksum import calc_checksums
from divertgui.engine.packet import Packet
from divertgui.engine.tcp_split import set_oversized_tcp_payload, split_tcp_segment

FIN, SYN, PSH, ACK = 0x01, 0x02, 0x08, 0x10
OPTIONS = bytes.fromhex("0101080a0000000100000002")     # NOP NOP timestamps


def _tcp(payload: bytes, flags: int = ACK | PSH | FIN, version: int = 4, seq: int = 0xFFFFFF00) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", 40000, 80, seq, 777, (20 + len(OPTIONS)) // 4 << 4, flags, 512, 0, 0)
    tcp += OPTIONS
    if version == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, min(20 + len(tcp) + len(payload), 0xFFFF), 0x1234, 0x4000,
                         64, 6, 0, socket.inet_aton("127.0.0.1"), socket.inet_aton("127.0.0.2"))
    else:
        ip = struct.pack("!IHBB16s16s", 0x60000000, min(len(tcp) + len(payload), 0xFFFF), 6, 64,
                         socket.inet_pton(socket.AF_INET6, "::1"), socket.inet_pton(socket.AF_INET6, "::2"))
    raw = bytearray(ip + tcp + payload)
    calc_checksums(raw)
    return bytes(raw)


def _valid(raw: bytes) -> bool:
    fixed = bytearray(raw)
    return calc_checksums(fixed) and bytes(fixed) == raw


@pytest.mark.parametrize("version", [4, 6])
def test_a_segment_splits_at_payload_boundaries_covering_the_same_sequence_space(version):
    payload = bytes(range(256)) * 300          # 76,800 bytes: past what IP's length carries
    raw = _tcp(payload, version=version)
    parts = split_tcp_segment(raw, 65531)
    assert len(parts) == 2
    header = len(raw) - len(payload)
    assert len(parts[0]) == 65531 and len(parts[1]) == header + len(payload) - (65531 - header)
    packets = [Packet(part) for part in parts]
    assert b"".join(packet.payload for packet in packets) == payload
    assert packets[0].tcp.seq_num == 0xFFFFFF00
    assert packets[1].tcp.seq_num == (0xFFFFFF00 + len(packets[0].payload)) & 0xFFFFFFFF
    assert [p.tcp.fin for p in packets] == [False, True] and [p.tcp.psh for p in packets] == [False, True]
    assert all(p.tcp.ack and p.tcp.ack_num == 777 for p in packets)
    assert all(part[header - len(OPTIONS):header] == OPTIONS for part in parts)
    assert all(_valid(part) for part in parts)
    if version == 4:
        assert [p.ip.length for p in packets] == [len(part) for part in parts]
        assert [p.ip.id for p in packets] == [0x1234, 0x1235] and all(p.ip.df for p in packets)
    else:
        assert [p.ipv6.length for p in packets] == [len(part) - 40 for part in parts]


def test_a_small_limit_gives_more_parts():
    payload = b"abcdefghij" * 10
    parts = split_tcp_segment(_tcp(payload, flags=ACK), 20 + 32 + 30)
    assert len(parts) == 4
    assert b"".join(Packet(part).payload for part in parts) == payload
    assert [Packet(part).tcp.seq_num - 0xFFFFFF00 & 0xFFFFFFFF for part in parts] == [0, 30, 60, 90]
    assert all(_valid(part) for part in parts)


def test_a_segment_received_cut_is_sent_whole_as_far_as_it_goes_without_its_fin():
    payload = b"x" * 65483
    received = _tcp(payload)[:65531]            # what a netlink attribute carries of it
    parts = split_tcp_segment(received, 65531, cut=True)
    assert len(parts) == 1 and len(parts[0]) == 65531 and _valid(parts[0])
    packet = Packet(parts[0])
    assert packet.ip.length == 65531 and packet.payload == payload[:len(packet.payload)]
    # The sender sends the missing bytes again, and its FIN after them.
    assert not packet.tcp.fin and packet.tcp.psh and packet.tcp.ack


def test_what_cannot_be_split_is_left_alone():
    assert split_tcp_segment(_tcp(b"x" * 100, flags=SYN), 80) is None
    assert split_tcp_segment(_tcp(b"", flags=ACK), 40) is None
    assert split_tcp_segment(_tcp(b"x" * 100), 52) is None       # no room after the headers
    udp = bytearray(struct.pack("!BBHHHBBH4s4sHHHH", 0x45, 0, 128, 1, 0, 64, 17, 0, socket.inet_aton("127.0.0.1"),
                                socket.inet_aton("127.0.0.2"), 1, 2, 108, 0) + b"u" * 100)
    assert split_tcp_segment(bytes(udp), 60) is None


def test_a_tcp_payload_beyond_ip_is_kept_whole_for_the_split():
    packet = Packet(_tcp(b"a" * 60000))
    grown = b"b" * 70000
    assert set_oversized_tcp_payload(packet, grown)
    assert packet.ip.length == 0xFFFF and packet.raw.endswith(grown)
    assert b"".join(Packet(part).payload for part in split_tcp_segment(packet.raw, 65531)) == grown
    assert not set_oversized_tcp_payload(Packet(b"\x45" + b"\0" * 19), b"x")


def test_a_hand_edit_too_large_for_one_verdict_goes_out_split(running):
    from tests.unit.session_harness import start_demo
    from tests.unit.test_session_edits import BOTH_WAYS, REQUESTS, hold_request_and_a_retransmission

    start_demo(running, rate=300, filter=BOTH_WAYS)
    running.post("set_intercept", filter=REQUESTS)
    first, again, request = hold_request_and_a_retransmission(running)
    # As on the netfilter backend, whose verdicts carry at most 65,531 bytes, with a lower limit.
    backend = running.session.backend
    backend.max_edited_size = limit = len(request.raw) + 20
    backend.received = collections.deque(maxlen=1 << 20)
    edited = Packet(bytearray(request.raw), request.address.copy())
    edited.payload = request.payload + b"X-Grown: " + b"g" * 100 + b"\r\n"
    running.post("forward", ids=[first["id"]], data={str(first["id"]): edited.raw.hex()}, fix=True)
    running.wait_for(lambda e: e["type"] == "held" and again["id"] in e["released"], "the copy released")

    expected = split_tcp_segment(edited.raw, limit)
    assert len(expected) == 2 and len(expected[0]) == limit
    sent = list(backend.received)
    at = sent.index(expected[0])
    assert sent[at + 1] == expected[1], "the rest follows the first part"
    assert sent.count(expected[0]) == 2 and sent.count(expected[1]) == 2, "the retransmission went out split too"
    assert running.session.stats()["send_failed"] == 0
