"""Programs that exit at once keep their names: the kernel's report of each exit (taskstats)
names a process whose /proc entry is gone by the time its flow or its event is read."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time

import pytest

from divertgui.engine.address import Event, Layer
from divertgui.engine.backends import exited_processes, socket_programs
from divertgui.engine.backends.cgroups import cgroup2_mount
from divertgui.engine.event_capture import EventCapture
from divertgui.engine.processes import FlowOwners, ProcessList, describe
from tests.integration.conftest import receive_expected
from tests.integration.socket_layer_fixtures import own_cgroup, start_in
from tests.integration.test_processes_netns import capture_learning_flows
from tests.unit.test_processes import _flow_event, udp4

pytestmark = pytest.mark.netns
__all__ = ["own_cgroup"]

# Each sends one datagram (its input) to port 9 of loopback and exits at once.
ONE_SHOT = {
    "nc": ["nc", "-u", "-q0", "127.0.0.1", "9"],
    "python3": [sys.executable, "-c", "import socket, sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                                      ".sendto(sys.stdin.buffer.read(), ('127.0.0.1', 9))"],
}


def run_one_shot(netns, program: str) -> int:
    """The pid of the program, run in the namespace to its end and reaped."""
    sender = netns.popen(ONE_SHOT[program], stdin=subprocess.PIPE)
    sender.communicate(b"hi\n", timeout=20)
    assert sender.returncode == 0
    assert not os.path.exists(f"/proc/{sender.pid}")
    return sender.pid


@pytest.fixture
def exits():
    listener = exited_processes.acquire()
    if listener is None:
        pytest.fail("this test runs as root in the initial namespaces, where the kernel reports exits")
    yield listener
    exited_processes.release()


@pytest.mark.parametrize("program", sorted(ONE_SHOT))
def test_a_program_gone_before_its_flow_event_is_read_is_named_on_its_packets(netns, exits, program):
    """The fixture holds the process's listener; the table takes one more hold of it."""
    pid = run_one_shot(netns, program)
    owners = FlowOwners(ProcessList(), exits=exited_processes.acquire())
    try:
        # Its FLOW event as a service without CAP_PERFMON reads it: the pid, no name.
        owners.learn([dataclasses.replace(_flow_event(Event.FLOW_ESTABLISHED, pid, 7, "127.0.0.1", 40000,
                                                      "127.0.0.1", 9), process="", user="")])
        index = owners.indexes([udp4("127.0.0.1", 40000, "127.0.0.1", 9)], [True])[0]
        process = owners.processes.get(index)
        expected = os.path.basename(sys.executable)[:15] if program == "python3" else "nc"
        assert (process.pid, process.name, process.user) == (pid, expected, "root")
    finally:
        owners.close()


def test_describing_a_program_gone_names_it_as_its_exit_was_reported(netns, exits):
    pid = run_one_shot(netns, "nc")
    assert describe(pid) == (pid, "", "")
    assert describe(pid, exits) == (pid, "nc", "root")


# One byte (not captured: it begins the flow, whose FLOW event names the pid), then a datagram
# the capture takes, then the program exits at once.
SEND_AND_EXIT = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b"a", ("127.0.0.1", int(sys.argv[1])))
s.sendto(b"payload", ("127.0.0.1", int(sys.argv[1])))
"""


def test_a_live_capture_names_a_program_that_sent_and_exited_at_once(netns, own_cgroup, capture_cgroup, exits,
                                                                       monkeypatch):
    """As the capture service, which may not read names in its eBPF programs (no CAP_PERFMON): the
    FLOW event gives the pid alone. The capture's thread works in the test's namespace, so the
    listener this test's thread opened in the initial one is the process's (exited_processes.acquire)."""
    monkeypatch.setattr(socket_programs, "names_readable", lambda: False)
    receiver, running, port = capture_learning_flows(netns, own_cgroup, capture_cgroup)
    try:
        sender = start_in(netns, own_cgroup, sys.executable, "-c", SEND_AND_EXIT, str(port))
        sender.communicate(timeout=20)
        assert sender.returncode == 0
        assert receive_expected(receiver, 2) == [b"a", b"payload"]
        running.wait_for(lambda e: e["type"] == "rows" and e["count"] >= 1, "the packet")
        process = running.store.process(0)
        assert process is not None and process.pid == sender.pid, process
        assert (process.name, process.user) == (os.path.basename(sys.executable)[:15], "root")
    finally:
        running.stop()
        receiver.close()


def test_an_event_read_after_its_program_exited_names_the_program(netns, own_cgroup, exits, monkeypatch):
    """The Events view's reading of the SOCKET layer, as the service without CAP_PERFMON does it:
    the program is reaped before its CONNECT is read."""
    monkeypatch.setattr(socket_programs, "names_readable", lambda: False)
    capture = EventCapture({Layer.SOCKET: "udp and event == CONNECT"}, os.path.relpath(own_cgroup, cgroup2_mount()))
    capture.open()
    try:
        sender = start_in(netns, own_cgroup, *ONE_SHOT["nc"], stdin=subprocess.PIPE)
        sender.communicate("hi\n", timeout=20)
        assert sender.returncode == 0 and not os.path.exists(f"/proc/{sender.pid}")
        records, end = [], time.monotonic() + 10
        while not records and time.monotonic() < end:
            records = capture.poll()
            time.sleep(0.05)
        assert [(r.event, r.pid, r.process, r.user) for r in records] == [(Event.SOCKET_CONNECT, sender.pid, "nc",
                                                                           "root")]
    finally:
        capture.close()
