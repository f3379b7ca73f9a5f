"""What happens to a diverted packet: modified, kept (dropped), sniffed, dropped in the kernel."""

import gc

import pytest

from divertgui.engine.address import Flag
from divertgui.engine.checksum import calc_checksums
from divertgui.engine.errors import DivertError
from divertgui.engine.handle import Divert
from tests.integration.conftest import receive_all, receive_expected, udp_socket, wait_until

pytestmark = pytest.mark.netns

PORT, OTHER_PORT = 40011, 40012


@pytest.mark.parametrize("version", [4, 6])
def test_a_modified_packet_arrives_modified(veth, backend, version):
    a_addr, b_addr = (veth.a_v4, veth.b_v4) if version == 4 else (veth.a_v6, veth.b_v6)
    with veth.b.entered():
        server = udp_socket(b_addr, PORT)
        with Divert(f"inbound and udp.DstPort == {PORT}", backend=backend()) as handle:
            with veth.a.entered():
                udp_socket(a_addr).sendto(b"hello, world", (b_addr, PORT))
            packet = handle.recv(timeout=2)
            assert packet.payload == b"hello, world"
            packet.payload = b"HELLO, WORLD, LONGER"
            edited = bytearray(packet.raw)
            assert calc_checksums(edited)
            packet.raw = edited
            handle.send(packet)
            data = server.recv(100)
            stats = handle.stats()
    assert data == b"HELLO, WORLD, LONGER"
    assert stats["modified"] == 1 and stats["diverted"] == 1


def test_an_outbound_packet_modified_on_its_way_out(veth, backend):
    with veth.a.entered():
        server = udp_socket(veth.a_v4, PORT)
    with veth.b.entered():
        with Divert(f"outbound and udp.DstPort == {PORT}", backend=backend()) as handle:
            udp_socket(veth.b_v4).sendto(b"lower case", (veth.a_v4, PORT))
            packet = handle.recv(timeout=2)
            packet.payload = b"UPPER CASE"
            edited = bytearray(packet.raw)
            assert calc_checksums(edited)
            packet.raw = edited
            handle.send(packet)
    assert server.recv(100) == b"UPPER CASE"


def test_a_packet_received_and_never_sent_never_arrives(netns, backend):
    with netns.entered():
        server = udp_socket("127.0.0.1", PORT)
        with Divert(f"udp.DstPort == {PORT}", backend=backend()) as handle:
            client = udp_socket("127.0.0.1")
            client.sendto(b"kept", ("127.0.0.1", PORT))
            client.sendto(b"kept too", ("127.0.0.1", PORT))
            first = handle.recv(timeout=2)
            second = handle.recv(timeout=2)
            assert first.payload == b"kept"
            del first           # forgotten: dropped now
            gc.collect()
            assert receive_all(server, 0.3) == []
            assert handle.stats()["dropped"] == 1
            client.sendto(b"sent", ("127.0.0.1", PORT))
            handle.send(handle.recv(timeout=2))
            after = receive_expected(server, 1)
        # `second` is still held when the handle closes: dropped with it.
        assert second.payload == b"kept too"
        late = receive_all(server, 0.3)
    assert after == [b"sent"] and late == []


def test_packets_sent_together_leave_in_the_order_given(netns, backend):
    with netns.entered():
        server = udp_socket("127.0.0.1", PORT)
        with Divert(f"udp.DstPort == {PORT}", backend=backend()) as handle:
            client = udp_socket("127.0.0.1")
            for i in range(4):
                client.sendto(b"in order %d" % i, ("127.0.0.1", PORT))
            held = []
            wait_until(lambda: held.extend(handle.recv_batch(16, 0.1)) or len(held) >= 4, 30)
            # Every packet held, none changed: the whole queue, handed back newest first.
            handle.send_batch(held[::-1])
            arrived = receive_expected(server, 4)
    assert [p.payload for p in held] == [b"in order %d" % i for i in range(4)]
    assert arrived == [b"in order %d" % i for i in (3, 2, 1, 0)]


def test_sniff_copies_without_holding_anything_up(netns, backend):
    with netns.entered():
        server = udp_socket("127.0.0.1", PORT)
        with Divert(f"udp.DstPort == {PORT}", flags=Flag.SNIFF, backend=backend()) as handle:
            client = udp_socket("127.0.0.1")
            for i in range(5):
                client.sendto(b"seen %d" % i, ("127.0.0.1", PORT))
            # Nobody has read the handle yet, and every packet has arrived.
            arrived = receive_expected(server, 5)
            copies = []
            wait_until(lambda: copies.extend(handle.recv_batch(16, 0.1)) or len(copies) >= 5, 3)
            stats = handle.stats()
            with pytest.raises(DivertError):
                handle.drop(copies[0])
    assert sorted(arrived) == [b"seen %d" % i for i in range(5)]
    assert sorted(p.payload for p in copies) == [b"seen %d" % i for i in range(5)]
    assert all(p.address.sniffed and p.address.outbound and p.address.loopback for p in copies)
    assert stats["sniffed"] == 5 and stats["diverted"] == 0


def test_drop_drops_in_the_kernel_and_nothing_else(veth, backend):
    with veth.b.entered():
        dropped_port = udp_socket(veth.b_v4, PORT)
        open_port = udp_socket(veth.b_v4, OTHER_PORT)
        with Divert(f"udp.DstPort == {PORT}", flags=Flag.DROP, backend=backend()) as handle:
            with veth.a.entered():
                client = udp_socket(veth.a_v4)
                for i in range(5):
                    client.sendto(b"gone", (veth.b_v4, PORT))
                    client.sendto(b"kept", (veth.b_v4, OTHER_PORT))
            assert receive_all(dropped_port, 0.3) == []
            assert receive_expected(open_port, 5) == [b"kept"] * 5
            stats = handle.stats()
            with pytest.raises(DivertError):
                handle.recv(timeout=0.1)
        # Closed: the port is reachable again.
        with veth.a.entered():
            client.sendto(b"back", (veth.b_v4, PORT))
        assert dropped_port.recv(100) == b"back"
    assert stats["dropped"] == 5
