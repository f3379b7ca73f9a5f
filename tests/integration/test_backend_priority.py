"""Handles at different priorities see a packet in priority order, once each;
what a handle injects skips handles at its priority and above."""

import pytest

from divertgui.engine.checksum import calc_checksums
from divertgui.engine.handle import Divert
from divertgui.engine.packet import Packet
from tests.integration.conftest import Passthru, receive_expected, udp_socket

pytestmark = pytest.mark.netns

PORT = 40021


def _upper(packet):
    packet.payload = packet.payload.upper()
    packet.raw = _with_checksums(packet.raw)


def _with_checksums(raw):
    edited = bytearray(raw)
    calc_checksums(edited)
    return edited


def test_higher_priority_first_then_lower_once_each(netns, backend):
    with netns.entered():
        server = udp_socket("127.0.0.1", PORT)
        # Opened lowest first: the order comes from the priorities, not from opening.
        with Divert(f"udp.DstPort == {PORT}", priority=-7, backend=backend()) as low, \
                Divert(f"udp.DstPort == {PORT}", priority=12, backend=backend()) as high, \
                Passthru(low) as low_side, Passthru(high, edit=_upper) as high_side:
            client = udp_socket("127.0.0.1")
            for i in range(3):
                client.sendto(b"packet %d" % i, ("127.0.0.1", PORT))
            got = receive_expected(server, 3)
            low_side.stop()
            high_side.stop()
    assert not low_side.errors and not high_side.errors
    assert sorted(got) == [b"PACKET %d" % i for i in range(3)]
    high_seen = [Packet(raw).payload for raw, _ in high_side.records]
    low_seen = [Packet(raw).payload for raw, _ in low_side.records]
    assert sorted(high_seen) == [b"packet %d" % i for i in range(3)]
    # The lower handle saw each packet once, after the higher one had edited it.
    assert sorted(low_seen) == [b"PACKET %d" % i for i in range(3)]
    for (_, high_address), (_, low_address) in zip(high_side.records, low_side.records):
        assert high_address.timestamp < low_address.timestamp


def test_a_reinjected_packet_goes_on_to_the_lower_handle_only(netns, backend):
    with netns.entered():
        server = udp_socket("127.0.0.1", PORT)
        with Divert(f"udp.DstPort == {PORT}", priority=100, backend=backend()) as high, \
                Divert(f"udp.DstPort == {PORT}", priority=-100, backend=backend()) as low:
            udp_socket("127.0.0.1").sendto(b"through both", ("127.0.0.1", PORT))
            first = high.recv(timeout=2)
            assert low.recv_batch(1, 0.2) == []
            first.payload = b"THROUGH BOTH"
            first.raw = _with_checksums(first.raw)
            high.send(first)
            second = low.recv(timeout=2)
            assert second.payload == b"THROUGH BOTH"
            low.send(second)
            assert high.recv_batch(1, 0.2) == []
            assert receive_expected(server, 1) == [b"THROUGH BOTH"]


@pytest.mark.backend_differs("pydivert", xfail="libebpfdivert diverts a packet to every handle of the same "
                                               "priority (WinDivert: at most once per priority level)")
def test_same_priority_diverts_a_packet_once(netns, backend):
    with netns.entered():
        server = udp_socket("127.0.0.1", PORT)
        with Divert(f"udp.DstPort == {PORT}", backend=backend()) as first, \
                Divert(f"udp.DstPort == {PORT}", backend=backend()) as second, \
                Passthru(first) as one, Passthru(second) as two:
            client = udp_socket("127.0.0.1")
            for i in range(4):
                client.sendto(b"once %d" % i, ("127.0.0.1", PORT))
            got = receive_expected(server, 4)
            one.stop()
            two.stop()
    assert sorted(got) == [b"once %d" % i for i in range(4)]
    assert len(one.records) + len(two.records) == 4


@pytest.mark.backend_differs("pydivert", xfail="libebpfdivert marks a held packet that is sent back as an "
                                               "impostor to lower handles (WinDivert: only new packets are)")
def test_injected_packets_skip_same_and_higher_priorities_and_are_no_impostors_below(netns, backend):
    # WINDIVERT_ADDRESS: "An impostor packet is any packet injected by another
    # driver": a packet one of our handles injects is not one.
    with netns.entered():
        server = udp_socket("127.0.0.1", PORT)
        with Divert(f"udp.DstPort == {PORT}", priority=100, backend=backend()) as high, \
                Divert(f"udp.DstPort == {PORT}", priority=0, backend=backend()) as middle, \
                Divert(f"udp.DstPort == {PORT}", priority=-100, backend=backend()) as low, \
                Passthru(high) as high_side, Passthru(low) as low_side:
            client = udp_socket("127.0.0.1")
            client.sendto(b"original", ("127.0.0.1", PORT))
            packet = middle.recv(timeout=2)
            duplicate = Packet(packet.raw, packet.address.copy())
            duplicate.payload = b"DUPLICAT"
            duplicate.raw = _with_checksums(duplicate.raw)
            middle.send(packet)           # verdict: goes on to `low`
            middle.send(duplicate)        # no pending verdict: injected
            got = receive_expected(server, 2)
            high_side.stop()
            low_side.stop()
            stats = middle.stats()
    assert sorted(got) == [b"DUPLICAT", b"original"]
    assert [Packet(raw).payload for raw, _ in high_side.records] == [b"original"]
    seen_low = sorted((Packet(raw).payload, a.impostor) for raw, a in low_side.records)
    assert seen_low == [(b"DUPLICAT", False), (b"original", False)]
    assert stats["injected"] == 1 and stats["sent"] == 1
