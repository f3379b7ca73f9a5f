"""The FLOW layer: TCP connections of real programs in a namespace, established and deleted.

The handle's eBPF program sees the processes of a cgroup the test creates
(socket_layer_fixtures); each flow's 5-tuple, direction, parent endpoint
and ProcessId are checked against the programs that made it.
"""

from __future__ import annotations

import sys
import textwrap

import pytest

from divertgui.engine.address import Event, Flag, Layer
from divertgui.engine.backends.socket_layer import FlowBackend
from divertgui.engine.handle import Divert, DivertArgumentError

from .socket_layer_fixtures import SNIFF, events_until, ipv4, own_cgroup, run_in, start_in

pytestmark = pytest.mark.netns
__all__ = ["own_cgroup"]

SERVER = textwrap.dedent("""
    import socket, sys
    family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
    server = socket.socket(family)
    server.bind((sys.argv[1], int(sys.argv[2])))
    server.listen()
    print("listening", flush=True)
    conn, _ = server.accept()
    conn.recv(100)
    conn.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")
    conn.close()
    server.close()
""")


def _flow_handle(cgroup: str, filter_text: str) -> Divert:
    return Divert(filter_text, Layer.FLOW, flags=SNIFF, backend=FlowBackend(cgroup)).open()


def _deleted_both(events) -> bool:
    return sum(a.event == Event.FLOW_DELETED for a in events) >= 2


@pytest.mark.parametrize("server_address,url_host,address", [
    ("127.0.0.1", "127.0.0.1", ipv4("127.0.0.1")),
    ("::1", "[::1]", 1),
])
def test_a_curl_connection_is_two_flows_established_and_deleted(netns, own_cgroup, server_address, url_host,
                                                                  address):
    port = 8090
    with _flow_handle(own_cgroup, f"tcp and (localPort == {port} or remotePort == {port})") as handle:
        server = start_in(netns, own_cgroup, sys.executable, "-c", SERVER, server_address, str(port))
        assert server.stdout.readline().strip() == "listening"
        curl_pid, curl = run_in(netns, own_cgroup, "curl", "-s", f"http://{url_host}:{port}/")
        assert curl.stdout == "ok", curl.stderr
        server.wait(timeout=10)
        events = events_until(handle, _deleted_both)
    assert all(a.layer == Layer.FLOW and a.ipv6 == (address == 1) and a.loopback for a in events), events
    outbound = [a for a in events if a.outbound]
    inbound = [a for a in events if not a.outbound]
    assert [a.event for a in outbound] == [Event.FLOW_ESTABLISHED, Event.FLOW_DELETED]
    assert [a.event for a in inbound] == [Event.FLOW_ESTABLISHED, Event.FLOW_DELETED]
    client_port = outbound[0].flow.local_port
    for a in outbound:
        assert a.flow.process_id == curl_pid
        assert (a.flow.local_addr, a.flow.remote_addr, a.flow.remote_port, a.flow.protocol) == \
            (address, address, port, 6)
        assert a.flow.local_port == client_port and a.flow.endpoint_id == outbound[0].flow.endpoint_id
    for a in inbound:
        assert a.flow.process_id == server.pid
        assert (a.flow.local_port, a.flow.remote_port) == (port, client_port)
        assert a.flow.parent_endpoint_id != 0 and a.flow.parent_endpoint_id != a.flow.endpoint_id


def test_the_filter_selects_flows_in_the_kernel_and_flowtrack_prints_them(netns, own_cgroup):
    with _flow_handle(own_cgroup, "event == DELETED and not outbound") as handle:
        server = start_in(netns, own_cgroup, sys.executable, "-c", SERVER, "127.0.0.1", "8091")
        assert server.stdout.readline().strip() == "listening"
        _pid, nc = run_in(netns, own_cgroup, "sh", "-c", "printf 'GET /\\r\\n\\r\\n' | nc -q 2 127.0.0.1 8091")
        assert "ok" in nc.stdout, nc.stderr
        server.wait(timeout=10)
        events = events_until(handle, lambda seen: len(seen) >= 1, 5)
        events += [p.address for p in handle.recv_batch(10, 0.3)]
    assert [(a.event, a.outbound, a.flow.process_id) for a in events] == [(Event.FLOW_DELETED, False, server.pid)]
    from divertgui.event_samples import event_line
    assert event_line(events[0]).startswith(f"DELETED     {server.pid:>7} ")


def test_flow_handles_need_sniff_and_recv_only():
    with pytest.raises(DivertArgumentError, match="SNIFF"):
        Divert("true", Layer.FLOW, flags=Flag.RECV_ONLY)
