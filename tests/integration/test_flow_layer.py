"""The FLOW layer: TCP connections and UDP flows of real programs in a namespace, established and deleted.

The handle's eBPF program sees the processes of a cgroup the test creates
(socket_layer_fixtures); each flow's 5-tuple, direction, parent endpoint
and ProcessId are checked against the programs that made it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from divertgui.engine.address import Event, Flag, Layer
from divertgui.engine.backends import bpf_syscall
from divertgui.engine.backends.cgroups import open_cgroup
from divertgui.engine.backends.socket_layer import FlowBackend
from divertgui.engine.errors import DivertArgumentError
from divertgui.engine.handle import Divert

from .conftest import REPO, wait_until
from .socket_layer_fixtures import SNIFF, events_until, handle_after_server, ipv4, own_cgroup, run_in, start_in

pytestmark = pytest.mark.netns
__all__ = ["own_cgroup"]

SERVER = textwrap.dedent("""
    import socket, sys
    open("/proc/self/comm", "w").write("tcp-server")    # a name no other program here has
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


# An unconnected UDP socket: answers the first datagram, sends one to the next port (a second
# flow of the same socket), then closes.
UDP_SERVER = textwrap.dedent("""
    import socket, sys
    open("/proc/self/comm", "w").write("udp-server")
    host, port = sys.argv[1], int(sys.argv[2])
    server = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    server.bind((host, port))
    print("bound", flush=True)
    data, peer = server.recvfrom(100)
    server.sendto(b"ok\\n", peer)
    server.sendto(b"elsewhere", (host, port + 1))
    server.close()
""")


def _flow_handle(cgroup: str, filter_text: str) -> Divert:
    return Divert(filter_text, Layer.FLOW, flags=SNIFF, backend=FlowBackend(cgroup)).open()


def _exchange(netns, cgroup: str, server: tuple, ready: str, client: tuple, expected: str):
    """(the server, the client's pid): a Python server program that prints `ready`, and a
    client run to its end, whose output must contain `expected`, both in the cgroup."""
    server_process = start_in(netns, cgroup, sys.executable, "-c", *server)
    assert server_process.stdout.readline().strip() == ready
    client_pid, result = run_in(netns, cgroup, *client)
    assert expected in result.stdout, result.stderr
    server_process.wait(timeout=10)
    return server_process, client_pid


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
        server, curl_pid = _exchange(netns, own_cgroup, (SERVER, server_address, str(port)), "listening",
                                     ("curl", "-s", f"http://{url_host}:{port}/"), "ok")
        events = events_until(handle, _deleted_both)
    assert all(a.layer == Layer.FLOW and a.ipv6 == (address == 1) and a.loopback for a in events), events
    outbound = [a for a in events if a.outbound]
    inbound = [a for a in events if not a.outbound]
    assert [a.event for a in outbound] == [Event.FLOW_ESTABLISHED, Event.FLOW_DELETED]
    assert [a.event for a in inbound] == [Event.FLOW_ESTABLISHED, Event.FLOW_DELETED]
    client_port = outbound[0].flow.local_port
    for a in outbound:
        assert (a.flow.process_id, a.flow.process_name) == (curl_pid, "curl")
        assert (a.flow.local_addr, a.flow.remote_addr, a.flow.remote_port, a.flow.protocol) == \
            (address, address, port, 6)
        assert a.flow.local_port == client_port and a.flow.endpoint_id == outbound[0].flow.endpoint_id
    for a in inbound:
        assert (a.flow.process_id, a.flow.process_name) == (server.pid, "tcp-server")
        assert (a.flow.local_port, a.flow.remote_port) == (port, client_port)
        assert a.flow.parent_endpoint_id != 0 and a.flow.parent_endpoint_id != a.flow.endpoint_id


def test_flow_handles_need_sniff_and_recv_only():
    with pytest.raises(DivertArgumentError, match="SNIFF"):
        Divert("true", Layer.FLOW, flags=Flag.RECV_ONLY)


@pytest.mark.parametrize("host,address", [("127.0.0.1", ipv4("127.0.0.1")), ("::1", 1)])
def test_udp_flows_of_a_connected_nc_and_an_unconnected_socket_are_established_and_deleted(netns, own_cgroup,
                                                                                         tmp_path, host, address):
    port = 8092
    (tmp_path / "line").write_text("hi\n")
    with _flow_handle(own_cgroup, f"udp and (localPort == {port} or remotePort == {port})") as handle:
        server, nc_pid = _exchange(netns, own_cgroup, (UDP_SERVER, host, str(port)), "bound",
                                   ("sh", "-c", f"exec nc -u -w 5 -W 1 {host} {port} < {tmp_path}/line"), "ok\n")
        events = events_until(handle, lambda seen: sum(a.event == Event.FLOW_DELETED for a in seen) >= 3)
    assert all(a.layer == Layer.FLOW and a.loopback and a.ipv6 == (host == "::1") and a.flow.protocol == 17
               and a.flow.parent_endpoint_id == 0 and a.flow.local_addr == a.flow.remote_addr == address
               for a in events), events
    by_process = {pid: [a for a in events if a.flow.process_id == pid] for pid in (nc_pid, server.pid)}
    assert len(events) == 6 and len(by_process[nc_pid]) == 2, events
    # nc's connected socket: one flow, outbound, to the server's port.
    nc_flow = by_process[nc_pid]
    assert [(a.event, a.outbound, a.flow.remote_port) for a in nc_flow] == \
        [(Event.FLOW_ESTABLISHED, True, port), (Event.FLOW_DELETED, True, port)]
    nc_port = nc_flow[0].flow.local_port
    # The server's unconnected socket: the flow nc began (inbound), then its own to the next port.
    server_flows = by_process[server.pid]
    assert {a.flow.endpoint_id for a in server_flows} == {server_flows[0].flow.endpoint_id}
    assert [(a.event, a.outbound, a.flow.local_port, a.flow.remote_port) for a in server_flows] == [
        (Event.FLOW_ESTABLISHED, False, port, nc_port), (Event.FLOW_ESTABLISHED, True, port, port + 1),
        (Event.FLOW_DELETED, False, port, nc_port), (Event.FLOW_DELETED, True, port, port + 1)]
    assert nc_flow[0].flow.endpoint_id != server_flows[0].flow.endpoint_id
    # The inbound flow began in softirq while nc's task was current: still the server's name.
    assert {a.flow.process_name for a in server_flows} == {"udp-server"}
    assert {a.flow.process_name for a in nc_flow} == {"nc"}


@pytest.mark.parametrize("protocol,server,ready,client,answer", [
    ("tcp", SERVER, "listening", "printf 'GET /\\r\\n\\r\\n' | nc -q 2 127.0.0.1 {port}", "ok"),
    ("udp", UDP_SERVER, "bound", "printf 'hi\\n' | nc -u -w 5 -W 1 127.0.0.1 {port}", "ok\n"),
])
def test_the_filter_selects_deleted_flows_in_the_kernel_and_flowtrack_prints_them(netns, own_cgroup, protocol,
                                                                                   server, ready, client, answer):
    """For UDP the kernel passes up the flows whose DELETED the filter wants, not their ESTABLISHED."""
    port = 8091 if protocol == "tcp" else 8093
    with _flow_handle(own_cgroup, f"{protocol} and event == DELETED and not outbound") as handle:
        server, _pid = _exchange(netns, own_cgroup, (server, "127.0.0.1", str(port)), ready,
                                 ("sh", "-c", client.format(port=port)), answer)
        events = events_until(handle, lambda seen: len(seen) >= 1, 5)
        events += [p.address for p in handle.recv_batch(10, 0.3)]
    assert [(a.event, a.outbound, a.flow.process_id, a.flow.local_port) for a in events] == \
        [(Event.FLOW_DELETED, False, server.pid, port)]
    from divertgui.event_samples import event_line
    line = event_line(events[0])
    assert line.startswith(f"DELETED     {server.pid:>7} ") and f" {protocol}    127.0.0.1:{port} -> 127.0.0.1:" \
        in line, line


def _attached(cgroup: str) -> dict[int, int]:
    """Programs attached to the cgroup, by attach type."""
    fd = open_cgroup(cgroup)
    try:
        kinds = (bpf_syscall.ATTACH_INET_INGRESS, bpf_syscall.ATTACH_INET_EGRESS, bpf_syscall.ATTACH_SOCK_OPS,
                 bpf_syscall.ATTACH_INET_SOCK_RELEASE, bpf_syscall.ATTACH_INET_SOCK_CREATE)
        return {kind: len(bpf_syscall.query_cgroup(fd, kind)) for kind in kinds
                if bpf_syscall.query_cgroup(fd, kind)}
    finally:
        os.close(fd)


def test_a_flow_handle_attaches_only_what_its_filter_needs_and_nothing_stays_after_close_or_kill(own_cgroup):
    ingress, egress = bpf_syscall.ATTACH_INET_INGRESS, bpf_syscall.ATTACH_INET_EGRESS
    create, sock_ops, release = (bpf_syscall.ATTACH_INET_SOCK_CREATE, bpf_syscall.ATTACH_SOCK_OPS,
                                 bpf_syscall.ATTACH_INET_SOCK_RELEASE)
    for filter_text, expected in (("tcp", {create: 1, sock_ops: 1}),
                                  ("udp and event == ESTABLISHED", {create: 1, ingress: 1, egress: 1}),
                                  ("true", {create: 1, sock_ops: 1, ingress: 1, egress: 1, release: 1})):
        with _flow_handle(own_cgroup, filter_text):
            assert _attached(own_cgroup) == expected, filter_text
        assert _attached(own_cgroup) == {}
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom tests.integration.test_flow_layer import _flow_handle\n"
                               "h = _flow_handle(sys.argv[1], 'true'); print('open', flush=True); time.sleep(60)",
         own_cgroup], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "open"
        assert len(_attached(own_cgroup)) == 5
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        # The kernel releases a link when its last descriptor closes; that may finish after exit().
        assert wait_until(lambda: _attached(own_cgroup) == {}, 5)
    finally:
        holder.kill()


# Sends one datagram whose IPv4 header carries options (four NOPs), so the ports lie past 20 bytes.
OPTIONS_SENDER = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, bytes([1, 1, 1, 1]))
    s.sendto(b"x", ("127.0.0.1", int(sys.argv[1])))
    print(s.getsockname()[1], flush=True)
""")


def test_a_udp_flow_of_an_ipv4_header_with_options_has_its_ports(netns, own_cgroup):
    with _flow_handle(own_cgroup, "udp and remotePort == 8094") as handle:
        pid, sender = run_in(netns, own_cgroup, sys.executable, "-c", OPTIONS_SENDER, "8094")
        events = events_until(handle, lambda seen: len(seen) >= 2)
    assert [(a.event, a.outbound, a.flow.process_id, a.flow.local_port) for a in events] == \
        [(Event.FLOW_ESTABLISHED, True, pid, int(sender.stdout)), (Event.FLOW_DELETED, True, pid, int(sender.stdout))]


# A UDP socket bound before the FLOW handle opens: it answers one datagram, then stays open
# for a while (the cgroup fixture ends it).
EARLY_UDP_SERVER = textwrap.dedent("""
    import socket, sys
    open("/proc/self/comm", "w").write("early-udp")
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", int(sys.argv[1])))
    print("bound", flush=True)
    data, peer = server.recvfrom(100)
    server.sendto(b"ok", peer)
    server.settimeout(20)
    try:
        server.recvfrom(100)
    except OSError:
        pass
""")


def test_a_udp_socket_created_before_the_handle_opened_has_its_process_while_it_exists(netns, own_cgroup):
    """The kernel programs never saw it created (ProcessId 0); socket diagnostics find it by its
    5-tuple and cookie in the namespace the handle was opened in."""
    port = 8095
    server, handle = handle_after_server(
        netns, own_cgroup, (sys.executable, "-c", EARLY_UDP_SERVER, str(port)), "bound",
        lambda: _flow_handle(own_cgroup, f"udp and (localPort == {port} or remotePort == {port})"))
    with handle:
        _pid, result = run_in(netns, own_cgroup, "sh", "-c", f"printf hi | nc -u -w 5 -W 1 127.0.0.1 {port}")
        assert result.stdout == "ok", result.stderr
        events = events_until(handle, lambda seen: len(seen) >= 2)
    # nc's flow, and the server's (its reply is the same flow).
    server_flows = [a for a in events if a.flow.local_port == port]
    assert [(a.event, a.outbound) for a in server_flows] == [(Event.FLOW_ESTABLISHED, False)], events
    assert {(a.flow.process_id, a.flow.process_name) for a in server_flows} == {(server.pid, "early-udp")}
    assert {a.flow.process_name for a in events if a.flow.local_port != port} == {"nc"}
