"""divertgui.pydivert on real traffic in network namespaces, beyond what pydivert's own suite covers."""

from __future__ import annotations

import asyncio
import gc

import pytest

import divertgui.pydivert as pydivert
from tests.integration.conftest import receive_all, udp_socket

pytestmark = pytest.mark.netns

PORT = 40311


def test_interfaces_limit_the_handle_to_those_interfaces(veth):
    """pydivert's Linux option interfaces=[...]: packets on other interfaces are not diverted."""
    with veth.a.entered():
        on_lo = udp_socket("127.0.0.1", PORT)
        sender = udp_socket(veth.a_v4)
        with pydivert.Divert(f"udp.DstPort == {PORT}", flags=pydivert.Flag.SNIFF, interfaces=["veth0"]) as w:
            sender.sendto(b"over lo", ("127.0.0.1", PORT))
            sender.sendto(b"over veth", (veth.b_v4, PORT))
            seen = []
            while True:
                try:
                    seen.append(w.recv(timeout=0.5))
                except TimeoutError:
                    break
        assert receive_all(on_lo, 0.5) == [b"over lo"]
    assert [(p.payload, p.dst_addr, p.interface) for p in seen] == \
        [(b"over veth", veth.b_v4, (veth.a.ifindex("veth0"), 0))]
    with pytest.raises(OSError):
        pydivert.Divert("true", interfaces=["no-such-interface"]).open()


def test_a_packet_not_sent_is_dropped_when_let_go(netns):
    with netns.entered():
        server = udp_socket("127.0.0.1", PORT)
        client = udp_socket("127.0.0.1")
        with pydivert.Divert(f"udp.DstPort == {PORT}") as w:
            client.sendto(b"dropped", ("127.0.0.1", PORT))
            packet = w.recv(timeout=2)
            assert packet.payload == b"dropped"
            gc.disable()
            try:
                del packet
                counts = w.stats()
            finally:
                gc.enable()
            client.sendto(b"passed", ("127.0.0.1", PORT))
            w.send(w.recv(timeout=2))
            assert receive_all(server, 0.5) == [b"passed"]
    assert counts["dropped"] == 1 and counts["held"] == 0


def test_a_cancelled_recv_async_loses_no_packet(netns):
    async def run(w, client):
        for attempt in range(5):
            waiting = asyncio.create_task(w.recv_async())
            await asyncio.sleep(0.05)
            waiting.cancel()
            client.sendto(b"packet %d" % attempt, ("127.0.0.1", PORT))
            with pytest.raises(asyncio.CancelledError):
                await waiting
            packet = await w.recv_async(timeout=2)
            await w.send_async(packet)
            yield packet.payload

    async def collect(w, client):
        return [payload async for payload in run(w, client)]

    with netns.entered():
        server = udp_socket("127.0.0.1", PORT)
        client = udp_socket("127.0.0.1")
        with pydivert.Divert(f"udp.DstPort == {PORT}") as w:
            payloads = asyncio.run(collect(w, client))
        received = receive_all(server, 0.5)
    expected = [b"packet %d" % i for i in range(5)]
    assert payloads == expected and received == expected


def test_send_batch_sends_each_packet_once_and_counts_those_sent(netns):
    with netns.entered():
        server = udp_socket("127.0.0.1", PORT)
        client = udp_socket("127.0.0.1")
        with pydivert.Divert(f"udp.DstPort == {PORT}") as w:
            for i in range(3):
                client.sendto(b"batch %d" % i, ("127.0.0.1", PORT))
            received = []
            while len(received) < 3:
                received += w.recv_batch(3, timeout=2)
            unsendable = pydivert.Packet(bytes(20))      # not an IP packet
            assert w.send_batch([received[0], unsendable, *received[1:]]) == 3
        assert sorted(receive_all(server, 0.5)) == [b"batch 0", b"batch 1", b"batch 2"]


def test_a_handle_left_open_is_closed_with_a_warning(netns):
    with netns.entered():
        handle = pydivert.Divert(f"udp.DstPort == {PORT}").open()
        engine_handle = handle._handle
        with pytest.warns(ResourceWarning, match="Unclosed Divert"):
            del handle
            gc.collect()
        assert not engine_handle.is_open


def test_an_edited_packet_sent_without_recalculating_gets_correct_checksums(veth):
    """Editing clears the checksum flags, and send() fills in the checksums whose flag is 0."""
    with veth.b.entered():
        server = udp_socket(veth.b_v4, PORT)
        sniffer = pydivert.Divert(f"inbound and udp.DstPort == {PORT}", flags=pydivert.Flag.SNIFF).open()
    try:
        with veth.a.entered():
            client = udp_socket(veth.a_v4)
            with pydivert.Divert(f"outbound and udp.DstPort == {PORT}") as w:
                client.sendto(b"lower case", (veth.b_v4, PORT))
                packet = w.recv(timeout=2)
                packet.payload = packet.payload.upper()
                assert not packet.udp_checksum and not packet.is_checksum_valid
                w.send(packet, recalculate_checksum=False)
        arrived = sniffer.recv(timeout=2)
    finally:
        sniffer.close()
    assert arrived.payload == b"LOWER CASE" and arrived.is_checksum_valid
    assert receive_all(server, 0.5) == [b"LOWER CASE"]
