"""Answers built by divertgui.engine.replies reach the sender wherever the
handle sees the packet: leaving this host, arriving, on loopback, forwarded."""

from __future__ import annotations

import socket
import threading

import pytest

from divertgui.engine import replies
from divertgui.engine.address import Layer
from divertgui.engine.handle import Divert

pytestmark = pytest.mark.netns

PORT = 40321


class _Refuser:
    """Drops what the handle diverts and answers each packet with replies.tcp_reset / icmp_unreachable."""

    def __init__(self, handle):
        self.handle, self.answered = handle, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            for packet in self.handle.recv_batch(16, 0.05):
                answer = replies.tcp_reset(packet) if packet.tcp is not None else replies.icmp_unreachable(packet)
                self.handle.drop(packet)
                if answer is not None:
                    self.handle.send(answer)
                    self.answered += 1

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)


def _refused(family, address) -> tuple[bool, bool]:
    """(TCP connect refused, UDP answered with port unreachable) for a client of `address`."""
    try:
        socket.create_connection((address, PORT), timeout=3).close()
        tcp = False
    except ConnectionRefusedError:
        tcp = True
    client = socket.socket(family, socket.SOCK_DGRAM)
    client.settimeout(3)
    client.connect((address, PORT))
    client.send(b"knock")
    try:
        client.recv(100)
        udp = False
    except ConnectionRefusedError:
        udp = True
    except socket.timeout:
        udp = False
    return tcp, udp


def _servers(ns, family, address):
    with ns.entered():
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.bind((address, PORT))
        listener.listen(4)
        udp = socket.socket(family, socket.SOCK_DGRAM)
        udp.bind((address, PORT))
    return listener, udp


FILTER = f"(tcp.DstPort == {PORT} and tcp.Syn) or udp.DstPort == {PORT}"


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("side", ["client's outbound", "server's inbound", "loopback"])
def test_a_refused_connection_and_datagram_are_answered_to_the_sender(veth, version, side):
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    server_ns, server_addr = (veth.b, veth.b_v4 if version == 4 else veth.b_v6)
    handle_ns = veth.a if side == "client's outbound" else veth.b
    client_ns = veth.a
    if side == "loopback":
        server_ns = client_ns = handle_ns = veth.a
        server_addr = "127.0.0.1" if version == 4 else "::1"
    listener, udp = _servers(server_ns, family, server_addr)
    with handle_ns.entered():
        handle = Divert(FILTER).open()
        refuser = _Refuser(handle)
    try:
        with client_ns.entered():
            refused = _refused(family, server_addr)
    finally:
        refuser.stop()
        with handle_ns.entered():
            handle.close()
    assert refused == (True, True)
    assert refuser.answered == 2
    listener.close()
    udp.close()


@pytest.mark.parametrize("version", [4, 6])
def test_a_forwarded_packet_is_answered_back_through_the_router(routed, version):
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    server_addr = routed.b_v4 if version == 4 else routed.b_v6
    listener, udp = _servers(routed.b, family, server_addr)
    with routed.r.entered():
        handle = Divert(FILTER, layer=Layer.NETWORK_FORWARD).open()
        refuser = _Refuser(handle)
    try:
        with routed.a.entered():
            refused = _refused(family, server_addr)
    finally:
        refuser.stop()
        with routed.r.entered():
            handle.close()
    assert refused == (True, True)
    assert refuser.answered == 2
    listener.close()
    udp.close()
