"""The process behind each live packet: two real programs in a namespace, each packet with its sender."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest

from tests.integration.conftest import receive_expected
from tests.integration.socket_layer_fixtures import own_cgroup, start_in
from tests.unit.test_session import Running

pytestmark = pytest.mark.netns
__all__ = ["own_cgroup"]

# Connects (TCP) or binds (UDP), prints its pid and local port, then sends one message per line read.
SENDER = r"""
import os, socket, sys
kind, port = sys.argv[1], int(sys.argv[2])
host = "::1" if kind.endswith("6") else "127.0.0.1"
s = socket.socket(socket.AF_INET6 if kind.endswith("6") else socket.AF_INET,
                  socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
if kind == "tcp":
    s.connect((host, port))
else:
    s.bind((host, 0))
print(os.getpid(), s.getsockname()[1], flush=True)
for line in sys.stdin:
    data = line.strip().encode()
    s.send(data) if kind == "tcp" else s.sendto(data, (host, port))
"""


def start_sender(netns, kind: str, port: int):
    process = netns.popen([sys.executable, "-c", SENDER, kind, str(port)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)
    pid, local_port = map(int, process.stdout.readline().split())
    return process, pid, local_port


def say(process, text: str) -> None:
    process.stdin.write(text + "\n")
    process.stdin.flush()


def test_each_live_packet_names_the_program_that_sent_it(netns, capture_cgroup):
    with netns.entered():
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.bind(("127.0.0.1", 0))
        receiver6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        receiver6.bind(("::1", 0))
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        running = Running()
    udp_port, tcp_port, udp6_port = receiver.getsockname()[1], listener.getsockname()[1], receiver6.getsockname()[1]
    first, first_pid, first_port = start_sender(netns, "udp", udp_port)
    second, second_pid, second_port = start_sender(netns, "udp", udp_port)
    six, six_pid, six_port = start_sender(netns, "udp6", udp6_port)
    # A connection made before the capture starts.
    early, early_pid, early_port = start_sender(netns, "tcp", tcp_port)
    accepted, _ = listener.accept()
    try:
        running.post("start", source="live", mode="sniff", priority=0, layer="NETWORK", cgroup=capture_cgroup,
                     filter=f"udp.DstPort == {udp_port} or udp.DstPort == {udp6_port} or tcp.DstPort == {tcp_port} "
                            f"or tcp.SrcPort == {tcp_port}")
        state = running.wait_for(lambda e: e["type"] in ("state", "error"), "state event")
        assert state["type"] == "state" and state["source"] == "live" and not state["reason"], state
        for i in range(3):
            say(first, f"first {i}")
            say(second, f"second {i}")
        say(early, "early")
        say(six, "over IPv6")
        receive_expected(receiver, 6)
        receive_expected(receiver6, 1)
        accepted.settimeout(5)
        assert accepted.recv(100) == b"early"
        accepted.send(b"answer")
        running.wait_for(lambda e: e["type"] == "rows" and e["count"] >= 9, "the packets")
        store = running.store
        owner_of_port = {first_port: first_pid, second_port: second_pid, early_port: early_pid,
                         tcp_port: os.getpid(), six_port: six_pid}
        seen = set()
        for row in range(len(store)):
            # On loopback each packet is seen leaving: its source port is its sender's socket.
            assert store.address(row).outbound
            process = store.process(row)
            expected = owner_of_port[store.value("src_port", row)]
            assert process is not None and process.pid == expected, (row, process, expected)
            assert process.name.startswith("python") or process.name == os.path.basename(sys.executable)
            seen.add(expected)
        assert seen == {first_pid, second_pid, early_pid, os.getpid(), six_pid}
    finally:
        running.stop()
        for process in (first, second, early, six):
            process.stdin.close()
            process.wait(timeout=10)
        accepted.close()
        listener.close()
        receiver.close()
        receiver6.close()


# Sends one byte to the port, waits for an answer, then three longer datagrams on the same flow.
FLOW_SENDER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(20)
s.sendto(b"a", ("127.0.0.1", int(sys.argv[1])))
s.recv(10)
for i in range(3):
    s.sendto(b"payload %d" % i, ("127.0.0.1", int(sys.argv[1])))
"""


def capture_learning_flows(netns, own_cgroup: str, capture_cgroup: str) -> tuple[socket.socket, Running, int]:
    """(receiver, running, port): a UDP receiver in the namespace, and a live capture of the
    datagrams to it longer than one byte, which learns their processes from the FLOW events
    of `own_cgroup`'s programs: a one-byte datagram begins a flow without being captured."""
    from divertgui.engine.backends.cgroups import cgroup2_mount
    with netns.entered():
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.bind(("127.0.0.1", 0))
        running = Running()
    port = receiver.getsockname()[1]
    try:
        running.post("start_events", layers={"FLOW": f"udp and remotePort == {port}"},
                     cgroup=os.path.relpath(own_cgroup, cgroup2_mount()))
        running.post("start", source="live", mode="sniff", priority=0, layer="NETWORK", cgroup=capture_cgroup,
                     filter=f"udp.DstPort == {port} and udp.PayloadLength > 1")
        state = running.wait_for(lambda e: e["type"] in ("state", "error"), "state event")
        assert state["type"] == "state" and state["source"] == "live" and not state["reason"], state
    except BaseException:
        running.stop()
        receiver.close()
        raise
    return receiver, running, port


def test_a_new_flow_gets_its_process_from_its_flow_event_without_a_socket_lookup(netns, own_cgroup, capture_cgroup):
    receiver, running, port = capture_learning_flows(netns, own_cgroup, capture_cgroup)
    try:
        sender = start_in(netns, own_cgroup, sys.executable, "-c", FLOW_SENDER, str(port))
        receiver.settimeout(10)
        data, peer = receiver.recvfrom(10)
        assert data == b"a"
        said = running.wait_for(lambda e: e["type"] == "events" and e["events"], "the flow's event")
        assert [(e["event"], e["pid"], e["flow"]["local_port"]) for e in said["events"]] == \
            [("ESTABLISHED", sender.pid, peer[1])]
        receiver.sendto(b"go", peer)
        assert receive_expected(receiver, 3) == [b"payload %d" % i for i in range(3)]
        running.wait_for(lambda e: e["type"] == "rows" and e["count"] >= 3, "the packets")
        store = running.store
        assert [store.process(row).pid for row in range(len(store))] == [sender.pid] * 3
        owners = running.session._owners
        assert owners.lookups == 0 and owners.learned == 1
        sender.wait(timeout=10)
    finally:
        running.stop()
        receiver.close()


def test_a_root_capture_names_an_earlier_socket_of_another_users_program(netns, capture_cgroup):
    """The record of creators (on a cgroup the sender is not in) has not seen the socket: a root
    capture finds it among the sender's open files, which a non-root service may not read."""
    import pwd
    with netns.entered():
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.bind(("127.0.0.1", 0))
        running = Running()
    port = receiver.getsockname()[1]
    nobody = pwd.getpwnam("nobody")
    sender = netns.popen([shutil.which("setpriv"), f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                          "--clear-groups", sys.executable, "-c", SENDER, "udp", str(port)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    pid, sender_port = map(int, sender.stdout.readline().split())
    try:
        running.post("start", source="live", mode="sniff", priority=0, layer="NETWORK", cgroup=capture_cgroup,
                     filter=f"udp.DstPort == {port}")
        state = running.wait_for(lambda e: e["type"] in ("state", "error"), "state event")
        assert state["type"] == "state" and state["source"] == "live" and not state["reason"], state
        say(sender, "from nobody")
        receive_expected(receiver, 1)
        running.wait_for(lambda e: e["type"] == "rows" and e["count"] >= 1, "the packet")
        process = running.store.process(0)
        assert running.store.value("src_port", 0) == sender_port
        assert process is not None and (process.pid, process.user) == (pid, "nobody"), process
        assert running.session._owners.created == 0
    finally:
        running.stop()
        sender.stdin.close()
        sender.wait(timeout=10)
        receiver.close()
