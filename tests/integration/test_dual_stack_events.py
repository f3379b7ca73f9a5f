"""Dual-stack (AF_INET6, IPV6_V6ONLY=0) TCP sockets at the FLOW and SOCKET layers.

A dual-stack socket talking IPv4 is reported as WinDivert's _V4 layers
report it: IPv6 bit 0 and IPv4 addresses (::ffff:a.b.c.d); the same
sockets talking IPv6 keep the IPv6 bit. The listener on [::] has no peer
and stays IPv6. Client in namespace a, server in b (veth pair), both in
the test's cgroup.
"""

from __future__ import annotations

import sys
import textwrap

import pytest

from divertgui.engine.address import Event, Layer
from divertgui.engine.backends.socket_layer import FlowBackend
from divertgui.engine.handle import Divert

from .socket_layer_fixtures import SNIFF, events_until, ipv4, own_cgroup, run_in, socket_handle, start_in
# SERVER HOST PORT: a listener on HOST that answers one connection (with "ok" at the end); an
# AF_INET6 socket for an IPv6 HOST, dual-stack (a namespace's net.ipv6.bindv6only is 0).
from .test_flow_layer import SERVER

pytestmark = pytest.mark.netns
__all__ = ["own_cgroup"]

PORT = 8094

# A dual-stack client socket: HOST PORT, HOST as IPv4-mapped for IPv4.
CLIENT = textwrap.dedent("""
    import socket, sys
    client = socket.socket(socket.AF_INET6)
    client.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    client.connect((sys.argv[1], int(sys.argv[2])))
    client.sendall(b"hi")
    print(client.recv(100).decode())
    client.close()
""")

# An IPv4 (AF_INET) client: HOST PORT.
IPV4_CLIENT = CLIENT.replace("socket.AF_INET6", "socket.AF_INET").replace(
    "client.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n", "")


def _addresses(veth, family: str) -> tuple[int, int, str]:
    """(client address, server address, what the client connects to) as the events carry them."""
    if family == "ipv4":
        return ipv4(veth.a_v4), ipv4(veth.b_v4), f"::ffff:{veth.b_v4}"
    return 0xFD77 << 112 | 1, 0xFD77 << 112 | 2, veth.b_v6


def _exchange(veth, cgroup: str, target: str) -> tuple[int, int]:
    """(server pid, client pid) of one exchange between the dual-stack sockets."""
    server = start_in(veth.b, cgroup, sys.executable, "-c", SERVER, "::", str(PORT))
    assert server.stdout.readline().strip() == "listening"
    client_pid, result = run_in(veth.a, cgroup, sys.executable, "-c", CLIENT, target, str(PORT))
    assert result.stdout.strip().endswith("ok"), result.stderr
    server.wait(timeout=10)
    return server.pid, client_pid


def _one(events, event, **fields):
    found = [a for a in events if a.event == event and all(getattr(a.flow, k) == v for k, v in fields.items())]
    assert len(found) == 1, (event, fields, events)
    return found[0]


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_flows_of_dual_stack_sockets_carry_the_ip_version_they_talk(veth, own_cgroup, family):
    client_addr, server_addr, target = _addresses(veth, family)
    peers = "10.77.0.1 or remoteAddr == 10.77.0.2" if family == "ipv4" else "fd77::1 or remoteAddr == fd77::2"
    backend = FlowBackend(own_cgroup)
    with Divert(f"tcp and remotePort != 0 and (remoteAddr == {peers})", Layer.FLOW, flags=SNIFF,
                backend=backend).open() as handle:
        server_pid, client_pid = _exchange(veth, own_cgroup, target)
        events = events_until(handle, lambda seen: sum(a.event == Event.FLOW_DELETED for a in seen) >= 2)
    assert all(a.layer == Layer.FLOW and a.ipv6 == (family == "ipv6") and not a.loopback for a in events), events
    outbound = [a for a in events if a.outbound]
    inbound = [a for a in events if not a.outbound]
    assert [a.event for a in outbound] == [Event.FLOW_ESTABLISHED, Event.FLOW_DELETED], events
    assert [a.event for a in inbound] == [Event.FLOW_ESTABLISHED, Event.FLOW_DELETED], events
    client_port = outbound[0].flow.local_port
    for a in outbound:
        assert a.flow.process_id == client_pid
        assert (a.flow.local_addr, a.flow.local_port, a.flow.remote_addr, a.flow.remote_port) == \
            (client_addr, client_port, server_addr, PORT)
    for a in inbound:
        assert a.flow.process_id == server_pid
        assert (a.flow.local_addr, a.flow.local_port, a.flow.remote_addr, a.flow.remote_port) == \
            (server_addr, PORT, client_addr, client_port)


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_socket_events_of_dual_stack_sockets_carry_the_ip_version_they_talk(veth, own_cgroup, family):
    client_addr, server_addr, target = _addresses(veth, family)
    with socket_handle(own_cgroup, f"tcp and (localPort == {PORT} or remotePort == {PORT})") as handle:
        server_pid, client_pid = _exchange(veth, own_cgroup, target)
        events = events_until(handle, lambda seen: sum(a.event == Event.SOCKET_CLOSE for a in seen) >= 3)
    talks_ipv6 = family == "ipv6"
    # The listener has no peer: bound to [::], it is IPv6 whatever its connections talk.
    bind = _one(events, Event.SOCKET_BIND, process_id=server_pid)
    listen = _one(events, Event.SOCKET_LISTEN, process_id=server_pid)
    listener_close = _one(events, Event.SOCKET_CLOSE, endpoint_id=listen.flow.endpoint_id)
    for a in (bind, listen, listener_close):
        assert a.ipv6 and (a.flow.local_addr, a.flow.local_port, a.flow.remote_addr) == (0, PORT, 0), a
    connect = _one(events, Event.SOCKET_CONNECT, process_id=client_pid)
    # Not bound yet: the unspecified local address, IPv4's 0.0.0.0 when it talks IPv4.
    assert (connect.flow.local_addr, connect.flow.local_port) == (0 if talks_ipv6 else ipv4("0.0.0.0"), 0)
    assert (connect.flow.remote_addr, connect.flow.remote_port) == (server_addr, PORT)
    client_close = _one(events, Event.SOCKET_CLOSE, endpoint_id=connect.flow.endpoint_id)
    client_port = client_close.flow.local_port
    assert (client_close.flow.local_addr, client_close.flow.remote_addr, client_close.flow.remote_port) == \
        (client_addr, server_addr, PORT)
    accept = _one(events, Event.SOCKET_ACCEPT, process_id=server_pid)
    assert (accept.flow.local_addr, accept.flow.local_port, accept.flow.remote_addr, accept.flow.remote_port) == \
        (server_addr, PORT, client_addr, client_port)
    assert accept.flow.parent_endpoint_id == listen.flow.endpoint_id
    accepted_close = _one(events, Event.SOCKET_CLOSE, endpoint_id=accept.flow.endpoint_id)
    assert (accepted_close.flow.local_addr, accepted_close.flow.remote_addr) == (server_addr, client_addr)
    for a in (connect, client_close, accept, accepted_close):
        assert a.ipv6 == talks_ipv6 and not a.loopback, a


def test_a_dual_stack_listener_on_an_ipv4_mapped_address_accepting_an_ipv4_client_is_ipv4_throughout(veth,
                                                                                                      own_cgroup):
    with socket_handle(own_cgroup, f"tcp and localAddr == {veth.b_v4} and localPort == {PORT}") as handle:
        server = start_in(veth.b, own_cgroup, sys.executable, "-c", SERVER, f"::ffff:{veth.b_v4}", str(PORT))
        assert server.stdout.readline().strip() == "listening"
        _pid, result = run_in(veth.a, own_cgroup, sys.executable, "-c", IPV4_CLIENT, veth.b_v4, str(PORT))
        assert result.stdout.strip().endswith("ok"), result.stderr
        server.wait(timeout=10)
        events = events_until(handle, lambda seen: sum(a.event == Event.SOCKET_CLOSE for a in seen) >= 2)
    assert sorted(a.event for a in events) == sorted([Event.SOCKET_BIND, Event.SOCKET_LISTEN, Event.SOCKET_ACCEPT,
                                                      Event.SOCKET_CLOSE, Event.SOCKET_CLOSE]), events
    for a in events:
        assert not a.ipv6 and a.flow.local_addr == ipv4(veth.b_v4), a
        assert a.flow.remote_addr == (0 if a.flow.remote_port == 0 else ipv4(veth.a_v4)), a
