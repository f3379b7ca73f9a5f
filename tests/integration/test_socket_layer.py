"""The SOCKET layer: real programs in a namespace, their socket operations reported and refused by eBPF.

Each program runs inside a cgroup the test creates (socket_layer_fixtures),
so the handle's eBPF programs see only the test's own processes.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from divertgui.engine.address import Event, Flag, Layer
from divertgui.engine.backends import bpf_syscall
from divertgui.engine.backends.cgroups import open_cgroup
from divertgui.engine.errors import DivertArgumentError, KernelFeatureError
from divertgui.engine.handle import Divert

from .conftest import wait_until
from .socket_layer_fixtures import (events_until, handle_after_server, ipv4, own_cgroup, run_in, socket_handle,
                                    start_in)

pytestmark = pytest.mark.netns
__all__ = ["own_cgroup"]

PY = sys.executable
LOOPBACK6 = 1

# SERVER PORT [stay]: with `stay`, the accepted socket stays open after the answer (the fixture ends it).
SERVER = textwrap.dedent("""
    import socket, sys, time
    open("/proc/self/comm", "w").write("tcp-server")    # a name no other program here has
    server = socket.socket()
    server.bind(("127.0.0.1", int(sys.argv[1])))
    server.listen()
    print("listening", flush=True)
    conn, _ = server.accept()
    conn.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")
    if sys.argv[2:] == ["stay"]:
        time.sleep(20)
    conn.close()
    server.close()
""")


def _one(events, event, **fields):
    found = [a for a in events if a.event == event and all(getattr(a.flow, k) == v for k, v in fields.items())]
    assert len(found) == 1, (event, fields, events)
    return found[0]


def test_tcp_bind_listen_connect_accept_close_with_processes_and_tuples(netns, own_cgroup):
    port = 8081
    with socket_handle(own_cgroup, "tcp and (localPort == 8081 or remotePort == 8081)") as handle:
        server = start_in(netns, own_cgroup, PY, "-c", SERVER, str(port))
        assert server.stdout.readline().strip() == "listening"
        curl_pid, curl = run_in(netns, own_cgroup, "curl", "-s", f"http://127.0.0.1:{port}/")
        assert curl.stdout == "ok", curl.stderr
        server.wait(timeout=10)
        events = events_until(handle, lambda seen: sum(a.event == Event.SOCKET_CLOSE for a in seen) >= 3)
    loopback = ipv4("127.0.0.1")
    bind = _one(events, Event.SOCKET_BIND, process_id=server.pid)
    assert (bind.flow.local_addr, bind.flow.local_port, bind.flow.protocol) == (loopback, port, 6)
    assert bind.outbound and bind.loopback and not bind.ipv6
    listen = _one(events, Event.SOCKET_LISTEN, process_id=server.pid)
    assert (listen.flow.local_addr, listen.flow.local_port, listen.flow.remote_port) == (loopback, port, 0)
    assert listen.flow.endpoint_id == bind.flow.endpoint_id
    connect = _one(events, Event.SOCKET_CONNECT, process_id=curl_pid)
    assert (connect.flow.remote_addr, connect.flow.remote_port, connect.flow.protocol) == (loopback, port, 6)
    assert connect.outbound
    curl_close = _one(events, Event.SOCKET_CLOSE, process_id=curl_pid)
    assert curl_close.flow.endpoint_id == connect.flow.endpoint_id
    assert (curl_close.flow.remote_addr, curl_close.flow.remote_port) == (loopback, port)
    curl_port = curl_close.flow.local_port
    assert curl_port not in (0, port)
    accept = _one(events, Event.SOCKET_ACCEPT, process_id=server.pid)
    assert not accept.outbound
    assert (accept.flow.local_addr, accept.flow.local_port) == (loopback, port)
    assert (accept.flow.remote_addr, accept.flow.remote_port) == (loopback, curl_port)
    assert accept.flow.parent_endpoint_id == listen.flow.endpoint_id
    accepted_close = _one(events, Event.SOCKET_CLOSE, endpoint_id=accept.flow.endpoint_id)
    assert accepted_close.flow.process_id == server.pid
    assert (accepted_close.flow.local_port, accepted_close.flow.remote_port) == (port, curl_port)
    listener_close = _one(events, Event.SOCKET_CLOSE, endpoint_id=listen.flow.endpoint_id)
    assert listener_close.flow.process_id == server.pid and listener_close.flow.local_port == port
    # Each event names its process as the kernel knew it, the handshake's (softirq) ACCEPT too.
    assert {(a.flow.process_id, a.flow.process_name) for a in events} == {(server.pid, "tcp-server"),
                                                                           (curl_pid, "curl")}


def test_udp_over_ipv6_bind_connect_close(netns, own_cgroup):
    script = textwrap.dedent("""
        import socket
        receiver = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        receiver.bind(("::1", 5353))
        sender = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sender.connect(("::1", 5353))
        sender.send(b"x")
        receiver.recv(10)
        sender.close()
        receiver.close()
    """)
    with socket_handle(own_cgroup, "udp") as handle:
        pid, result = run_in(netns, own_cgroup, PY, "-c", script)
        assert result.returncode == 0, result.stderr
        events = events_until(handle, lambda seen: sum(a.event == Event.SOCKET_CLOSE for a in seen) >= 2)
    assert all(a.ipv6 and a.flow.protocol == 17 and a.flow.process_id == pid for a in events), events
    bind = _one(events, Event.SOCKET_BIND)
    assert (bind.flow.local_addr, bind.flow.local_port) == (LOOPBACK6, 5353)
    connect = _one(events, Event.SOCKET_CONNECT)
    assert (connect.flow.remote_addr, connect.flow.remote_port) == (LOOPBACK6, 5353)
    assert _one(events, Event.SOCKET_CLOSE, endpoint_id=bind.flow.endpoint_id).flow.local_port == 5353
    assert _one(events, Event.SOCKET_CLOSE, endpoint_id=connect.flow.endpoint_id).flow.remote_port == 5353


CONNECT_CLIENT = textwrap.dedent("""
    import socket, sys
    try:
        socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()
        print("connected")
    except OSError as exc:
        print("errno", exc.errno)
""")


def test_a_blocked_connect_fails_with_eperm_and_succeeds_after_the_handle_closes(netns, own_cgroup):
    server = netns.popen([PY, "-c", "import socket, time\ns = socket.socket(); s.bind(('127.0.0.1', 8082));"
                                    "s.listen(16); print('up', flush=True); time.sleep(60)"],
                         stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "up"
    handle = socket_handle(own_cgroup, "event == CONNECT and remotePort == 8082", flags=Flag.RECV_ONLY)
    with handle:
        pid, result = run_in(netns, own_cgroup, PY, "-c", CONNECT_CLIENT, "127.0.0.1", "8082")
        assert result.stdout.split() == ["errno", str(errno.EPERM)]
        _curl_pid, curl = run_in(netns, own_cgroup, "curl", "-sSv", "http://127.0.0.1:8082/")
        assert curl.returncode == 7 and "Operation not permitted" in curl.stderr, curl.stderr
        event = handle.recv(timeout=10).address
        assert event.event == Event.SOCKET_CONNECT and event.flow.process_id == pid
        assert not event.sniffed and handle.stats()["dropped"] >= 1
    _pid, result = run_in(netns, own_cgroup, PY, "-c", CONNECT_CLIENT, "127.0.0.1", "8082")
    assert result.stdout.split() == ["connected"]


def test_a_blocked_bind_fails_and_the_kernel_filter_compares_addresses_and_ports(netns, own_cgroup):
    netns.ip("addr", "add", "127.0.0.5/8", "dev", "lo")
    server = netns.popen([PY, "-c", "import socket, time\nfor p in (8084, 8085):\n s = socket.socket();"
                                    " s.bind(('0.0.0.0', p)); s.listen(16); globals()[str(p)] = s\n"
                                    "print('up', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "up"
    blocking = ("(event == CONNECT and remoteAddr >= 127.0.0.2 and remoteAddr <= ::ffff:127.0.0.9 and "
                "(remotePort == 8084 or tcp and remotePort > 9000)) or (event == BIND and localPort == 8083)")
    with socket_handle(own_cgroup, blocking, flags=Flag.RECV_ONLY):
        for address, port, expected in (("127.0.0.1", 8084, "connected"), ("127.0.0.5", 8084, "errno"),
                                        ("127.0.0.5", 8085, "connected")):
            _pid, result = run_in(netns, own_cgroup, PY, "-c", CONNECT_CLIENT, address, str(port))
            assert result.stdout.split()[0] == expected, (address, port, result.stdout)
        _pid, nc = run_in(netns, own_cgroup, "nc", "-l", "127.0.0.1", "8083")
        assert nc.returncode != 0 and "Operation not permitted" in nc.stderr, nc.stderr


def test_a_blocking_handle_that_could_match_listen_or_accept_is_refused_with_the_reason(own_cgroup):
    with pytest.raises(KernelFeatureError, match="Linux cannot refuse LISTEN and ACCEPT"):
        socket_handle(own_cgroup, "localPort == 1", flags=Flag.RECV_ONLY)
    with pytest.raises(DivertArgumentError, match="RECV_ONLY"):
        Divert("true", Layer.SOCKET, flags=Flag.SNIFF)


def _attached(cgroup: str) -> list[int]:
    fd = open_cgroup(cgroup)
    try:
        return [prog for kind in (bpf_syscall.ATTACH_INET4_CONNECT, bpf_syscall.ATTACH_INET6_BIND,
                                  bpf_syscall.ATTACH_SOCK_OPS, bpf_syscall.ATTACH_INET_SOCK_RELEASE)
                for prog in bpf_syscall.query_cgroup(fd, kind)]
    finally:
        os.close(fd)


def test_programs_leave_the_cgroup_on_close_and_when_their_process_is_killed(own_cgroup):
    with socket_handle(own_cgroup, "true"):
        assert len(_attached(own_cgroup)) == 4
    assert _attached(own_cgroup) == []
    holder = subprocess.Popen(
        [PY, "-c", "import sys, time\nfrom tests.integration.socket_layer_fixtures import socket_handle\n"
                   "h = socket_handle(sys.argv[1], 'true'); print('open', flush=True); time.sleep(60)", own_cgroup],
        stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    try:
        assert holder.stdout.readline().strip() == "open"
        assert len(_attached(own_cgroup)) == 4
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        # The kernel releases a link when its last descriptor closes; that may finish after exit().
        assert wait_until(lambda: _attached(own_cgroup) == [], 5)
    finally:
        holder.kill()


def test_an_accept_of_a_listener_created_before_the_handle_opened_has_its_process(netns, own_cgroup):
    """The kernel programs never saw the listener created (its ACCEPT, reported by a sock_ops
    callback, carries ProcessId 0); socket diagnostics find the accepted socket by its 5-tuple
    and cookie in the namespace the handle was opened in."""
    port = 8096
    server, handle = handle_after_server(netns, own_cgroup, (PY, "-c", SERVER, str(port), "stay"), "listening",
                                         lambda: socket_handle(own_cgroup, f"event == ACCEPT and localPort == {port}"))
    with handle:
        _pid, curl = run_in(netns, own_cgroup, "curl", "-s", f"http://127.0.0.1:{port}/")
        assert curl.stdout == "ok", curl.stderr
        events = events_until(handle, lambda seen: len(seen) >= 1)
    assert [(a.event, a.flow.process_id, a.flow.process_name) for a in events] == \
        [(Event.SOCKET_ACCEPT, server.pid, "tcp-server")]


def test_the_close_of_an_unconnected_udp_socket_carries_the_port_its_first_sendto_chose(netns, own_cgroup):
    script = textwrap.dedent("""
        import socket
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.bind(("127.0.0.1", 5354))
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.sendto(b"x", ("127.0.0.1", 5354))
        print(receiver.recvfrom(10)[1][1])
        sender.close()
        receiver.close()
    """)
    with socket_handle(own_cgroup, "udp and event == CLOSE") as handle:
        pid, result = run_in(netns, own_cgroup, PY, "-c", script)
        assert result.returncode == 0, result.stderr
        events = events_until(handle, lambda seen: len(seen) >= 2)
    ports = sorted(a.flow.local_port for a in events)
    assert ports == sorted([5354, int(result.stdout)]), events
    assert all(a.flow.process_id == pid and not a.ipv6 for a in events)


CONNECTED_UDP = textwrap.dedent("""
    import socket, sys
    host = sys.argv[1]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    receiver = socket.socket(family, socket.SOCK_DGRAM)
    receiver.bind((host, 0))
    sender = socket.socket(family, socket.SOCK_DGRAM)
    sender.connect(receiver.getsockname()[:2])
    sender.send(b"x")
    receiver.recv(10)
    print(sender.getsockname()[1], receiver.getsockname()[1])
    sender.close()
    receiver.close()
""")
LOOPBACKS = pytest.mark.parametrize("host, address", [("127.0.0.1", ipv4("127.0.0.1")), ("::1", LOOPBACK6)],
                                    ids=["ipv4", "ipv6"])


@LOOPBACKS
def test_the_close_of_a_connected_udp_socket_carries_the_address_and_port_connect_chose(netns, own_cgroup, host,
                                                                                        address):
    with socket_handle(own_cgroup, "udp and event == CLOSE") as handle:
        pid, result = run_in(netns, own_cgroup, PY, "-c", CONNECTED_UDP, host)
        assert result.returncode == 0, result.stderr
        sender_port, receiver_port = (int(port) for port in result.stdout.split())
        events = events_until(handle, lambda seen: len(seen) >= 2)
    close = _one(events, Event.SOCKET_CLOSE, local_port=sender_port)
    assert (close.flow.local_addr, close.flow.remote_addr, close.flow.remote_port) == (address, address, receiver_port)
    assert close.flow.process_id == pid and close.ipv6 == (host == "::1")


@LOOPBACKS
def test_the_close_of_nc_udp_carries_its_connected_address_and_port(netns, own_cgroup, host, address):
    family = socket.AF_INET6 if host == "::1" else socket.AF_INET
    with netns.entered():
        receiver = socket.socket(family, socket.SOCK_DGRAM)
    with receiver, socket_handle(own_cgroup, "udp and event == CLOSE") as handle:
        receiver.bind((host, 0))
        receiver.settimeout(10)
        port = receiver.getsockname()[1]
        _pid, result = run_in(netns, own_cgroup, "/bin/sh", "-c", f"echo hi | nc -u -q0 {host} {port}")
        assert result.returncode == 0, result.stderr
        data, (_, nc_port, *_) = receiver.recvfrom(10)
        assert data == b"hi\n"
        events = events_until(handle, lambda seen: len(seen) >= 1)
    close = _one(events, Event.SOCKET_CLOSE)
    assert (close.flow.local_addr, close.flow.local_port, close.flow.remote_addr, close.flow.remote_port) == \
        (address, nc_port, address, port)
    assert close.flow.process_name == "nc" and close.ipv6 == (host == "::1")
