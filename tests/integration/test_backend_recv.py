"""recv gets exactly the matching packets, with the right address, and nothing else is held up."""

import socket
import time

import pytest

from divertgui.engine.handle import Divert
from tests.integration.conftest import Passthru, icmp_echo, receive_expected, transport_ports, udp_socket

pytestmark = pytest.mark.netns

PORT, OTHER_PORT = 40001, 40002


@pytest.mark.parametrize("version", [4, 6])
def test_udp_both_directions_over_veth_exactly_the_matching_packets(veth, backend, version):
    a_addr, b_addr = (veth.a_v4, veth.b_v4) if version == 4 else (veth.a_v6, veth.b_v6)
    b_if = veth.b.ifindex(veth.device)
    with veth.b.entered():
        server = udp_socket(b_addr, PORT)
        other = udp_socket(b_addr, OTHER_PORT)
        with Divert(f"udp.DstPort == {PORT} or udp.SrcPort == {PORT}", backend=backend()) as handle, \
                Passthru(handle) as passthru:
            with veth.a.entered():
                client = udp_socket(a_addr)
                for i in range(3):
                    client.sendto(b"request %d" % i, (b_addr, PORT))
                    client.sendto(b"elsewhere %d" % i, (b_addr, OTHER_PORT))
            requests = [server.recvfrom(100) for _ in range(3)]
            for data, peer in requests:
                server.sendto(b"reply to " + data, peer)
            with veth.a.entered():
                replies = [client.recv(100) for _ in range(3)]
            elsewhere = receive_expected(other, 3)
            passthru.stop()
            stats = handle.stats()

    assert not passthru.errors
    assert sorted(d for d, _ in requests) == [b"request 0", b"request 1", b"request 2"]
    assert sorted(replies) == [b"reply to request 0", b"reply to request 1", b"reply to request 2"]
    assert sorted(elsewhere) == [b"elsewhere 0", b"elsewhere 1", b"elsewhere 2"]

    inbound = [(raw, a) for raw, a in passthru.records if not a.outbound]
    outbound = [(raw, a) for raw, a in passthru.records if a.outbound]
    assert len(inbound) == 3 and len(outbound) == 3, passthru.records
    for raw, address in passthru.records:
        protocol, src, dst = transport_ports(raw)
        assert protocol == 17
        assert (dst if not address.outbound else src) == PORT
        assert address.ipv6 == (version == 6) and (raw[0] >> 4) == version
        assert address.if_idx == b_if
        assert not address.loopback and not address.impostor and not address.sniffed
    assert stats["diverted"] == 6 and stats["sent"] == 6


@pytest.mark.parametrize("version", [4, 6])
def test_tcp_connection_inbound_to_server_is_seen_with_direction(veth, backend, version):
    b_addr = veth.b_v4 if version == 4 else veth.b_v6
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    with veth.b.entered():
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.bind((b_addr, PORT))
        listener.listen(1)
        listener.settimeout(5)
        with Divert(f"tcp and localPort == {PORT}", backend=backend()) as handle, Passthru(handle) as passthru:
            with veth.a.entered():
                client = socket.create_connection((b_addr, PORT), timeout=5)
            conn, _ = listener.accept()
            client.sendall(b"over tcp")
            assert conn.recv(100) == b"over tcp"
            conn.sendall(b"and back")
            assert client.recv(100) == b"and back"
            client.close()
            conn.close()
            passthru.stop()
    assert not passthru.errors
    directions = {a.outbound for _, a in passthru.records}
    assert directions == {False, True}
    for raw, address in passthru.records:
        protocol, src, dst = transport_ports(raw)
        assert protocol == 6 and address.ipv6 == (version == 6)
        assert (src if address.outbound else dst) == PORT
    syn = passthru.records[0][0]
    assert not passthru.records[0][1].outbound
    assert transport_ports(syn)[2] == PORT


@pytest.mark.parametrize("version", [4, 6])
def test_icmp_echo_is_seen_in_and_out(veth, backend, version):
    b_addr = veth.b_v4 if version == 4 else veth.b_v6
    echo = "icmp.Type == 8 or icmp.Type == 0" if version == 4 else "icmpv6.Type == 128 or icmpv6.Type == 129"
    b_if = veth.b.ifindex(veth.device)
    with veth.b.entered():
        with Divert(echo, backend=backend()) as handle, Passthru(handle) as passthru:
            with veth.a.entered():
                replies = icmp_echo(b_addr, 2)
            passthru.stop()
    assert replies == 2
    assert not passthru.errors
    kinds = sorted((a.outbound, raw[20 if version == 4 else 40]) for raw, a in passthru.records)
    request, reply = (8, 0) if version == 4 else (128, 129)
    assert kinds == [(False, request), (False, request), (True, reply), (True, reply)]
    assert all(a.if_idx == b_if and a.ipv6 == (version == 6) for _, a in passthru.records)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_loopback_is_seen_once_on_the_outbound_path(netns, backend, host):
    with netns.entered():
        lo = socket.if_nametoindex("lo")
        server = udp_socket(host, PORT)
        with Divert(f"udp.DstPort == {PORT}", backend=backend()) as handle, Passthru(handle) as passthru:
            client = udp_socket(host)
            for i in range(4):
                client.sendto(b"loop %d" % i, (host, PORT))
            got = receive_expected(server, 4)
            passthru.stop()
    assert sorted(got) == [b"loop 0", b"loop 1", b"loop 2", b"loop 3"]
    assert len(passthru.records) == 4
    for raw, address in passthru.records:
        assert address.outbound and address.loopback and address.if_idx == lo
        assert address.ipv6 == (":" in host)


def test_timestamps_are_monotonic_nanoseconds(netns, backend):
    with netns.entered():
        server = udp_socket("127.0.0.1", PORT)
        with Divert(f"udp.DstPort == {PORT}", backend=backend()) as handle:
            before = time.monotonic_ns()
            udp_socket("127.0.0.1").sendto(b"when", ("127.0.0.1", PORT))
            packet = handle.recv(timeout=2)
            after = time.monotonic_ns()
            handle.send(packet)
            assert receive_expected(server, 1) == [b"when"]
    assert before <= packet.address.timestamp <= after


@pytest.mark.parametrize("text, rejected_in_user_space", [
    # The kernel tests this filter exactly: nothing else leaves it.
    (f"udp.DstPort == {PORT}", 0),
    # ifIdx is decided in user space only: the kernel passes every UDP packet
    # up, and the exact test releases the others at once.
    (f"udp.DstPort == {PORT} or ifIdx == 999", 20),
], ids=["kernel-exact", "user-space-exact"])
@pytest.mark.backend_differs("pydivert", when={"rejected_in_user_space": 20},
                             skip="the eBPF program tests the whole filter in the kernel; no packet is "
                                  "ever rejected in user space, so there is no such counter")
def test_non_matching_traffic_is_never_seen_and_not_delayed(netns, backend, text, rejected_in_user_space):
    with netns.entered():
        server = udp_socket("127.0.0.1", OTHER_PORT)
        with Divert(text, backend=backend()) as handle:
            # Nobody reads the handle: only the kernel prefilter or the exact
            # filter's early release lets this through.
            client = udp_socket("127.0.0.1")
            for i in range(20):
                client.sendto(b"free %d" % i, ("127.0.0.1", OTHER_PORT))
            # Everything arrives before anyone calls recv().
            got = receive_expected(server, 20)
            assert handle.recv_batch(10, timeout=0.2) == []
            stats = handle.stats()
    assert sorted(got) == sorted(b"free %d" % i for i in range(20))
    assert stats["diverted"] == 0 and stats.get("rejected", 0) == rejected_in_user_space
