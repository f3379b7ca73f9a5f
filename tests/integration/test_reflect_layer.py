"""The REFLECT layer and `divert list`, `watch`, `kill`: every handle on the machine, opening and closing.

Handles are opened by real processes (a SOCKET handle on the test's own
cgroup, and `divert passthru` inside a network namespace), and the events'
ProcessId, layer, priority, flags and filter object are checked against them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from divertgui.engine.address import Event, Flag, Layer
from divertgui.engine.backends import handle_registry
from divertgui.engine.filter import format_filter
from divertgui.engine.errors import DivertArgumentError
from divertgui.engine.handle import Divert

from .conftest import REPO, our_chains, wait_until
from .socket_layer_fixtures import own_cgroup

pytestmark = pytest.mark.netns
__all__ = ["own_cgroup"]
EVENTS = Flag.SNIFF | Flag.RECV_ONLY
HOLDER = ("import sys, time\nfrom tests.integration.socket_layer_fixtures import socket_handle\n"
          "from divertgui.engine.address import Flag\n"
          "h = socket_handle(sys.argv[1], 'event == CONNECT and remotePort == 443', Flag(int(sys.argv[2])))\n"
          "print('open', flush=True); time.sleep(60)")


def _reflect(filter_text: str = "true") -> Divert:
    return Divert(filter_text, Layer.REFLECT, flags=EVENTS).open()


def _next_event(handle, pid: int, event: Event):
    for _ in range(50):
        packet = handle.recv(timeout=10)
        if packet.address.reflect.process_id == pid and packet.address.event == event:
            return packet
    raise AssertionError(f"no {event.name} of process {pid}")


def _holder(cgroup: str) -> subprocess.Popen:
    """A process holding a SOCKET handle on the test's cgroup until it is killed."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, cgroup, str(int(EVENTS))], stdout=subprocess.PIPE,
                               text=True, cwd=REPO)
    assert process.stdout.readline().strip() == "open"
    return process


def test_open_and_close_of_a_handle_in_another_process_with_its_details(own_cgroup):
    with _reflect("event == OPEN or event == CLOSE") as reflect:
        holder = _holder(own_cgroup)
        try:
            opened = _next_event(reflect, holder.pid, Event.REFLECT_OPEN)
            data = opened.address.reflect
            assert (data.layer, data.priority, Flag(data.flags)) == (Layer.SOCKET, 0, EVENTS)
            assert opened.address.layer == Layer.REFLECT and opened.address.sniffed
            assert bytes(opened.raw).startswith(b"@WinDiv_")
            assert format_filter(bytes(opened.raw).decode(), Layer.SOCKET) == \
                format_filter("event == CONNECT and remotePort == 443", Layer.SOCKET)
            assert 0 < data.timestamp <= opened.address.timestamp
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=10)
        # A process killed with its handle open still gives a CLOSE, and its entry goes.
        closed = _next_event(reflect, holder.pid, Event.REFLECT_CLOSE)
        assert closed.address.reflect.priority == 0
        assert wait_until(lambda: all(e.pid != holder.pid for e in handle_registry.entries()), 5)


def test_handles_already_open_are_reported_first_and_reflect_handles_never(own_cgroup):
    holder = _holder(own_cgroup)
    try:
        with _reflect(), _reflect() as second:
            assert _next_event(second, holder.pid, Event.REFLECT_OPEN).address.reflect.layer == Layer.SOCKET
            assert all(e.layer != Layer.REFLECT for e in handle_registry.entries())
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_the_filter_selects_by_layer_priority_and_process(own_cgroup):
    from divertgui.engine.backends.socket_layer import SocketBackend
    me = os.getpid()
    with _reflect(f"event == OPEN and layer == SOCKET and priority == -7 and processId == {me}") as reflect:
        for priority in (5, -7):
            with Divert("event == BIND", Layer.SOCKET, priority=priority, flags=EVENTS,
                        backend=SocketBackend(own_cgroup)):
                packet = reflect.recv_batch(1, 0.5 if priority == 5 else 10)
                assert bool(packet) == (priority == -7)
        assert packet[0].address.reflect.priority == -7 and packet[0].address.reflect.process_id == me


def test_reflect_handles_need_sniff_and_recv_only():
    with pytest.raises(DivertArgumentError, match="SNIFF"):
        Divert("true", Layer.REFLECT, flags=Flag.RECV_ONLY)


def _cli(*args: str, ns=None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "divertgui.cli", *args]
    if ns is not None:
        return ns.exec(*command, check=False)
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO)


def test_divert_list_watch_and_kill_a_passthru_in_a_namespace(netns):
    passthru = netns.popen([sys.executable, "-m", "divertgui.cli", "passthru", "udp.DstPort == 5300",
                            "--priority", "17"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_until(lambda: any(e.pid == passthru.pid for e in handle_registry.entries()), 20)
    # Other programs on the machine open handles too: watch this one (already open, so reported first).
    watcher = subprocess.Popen([sys.executable, "-m", "divertgui.cli", "watch", "-c", "2",
                                f"processId == {passthru.pid}"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    listing = _cli("list")
    line = next(line for line in listing.stdout.splitlines() if line.split()[:1] == [str(passthru.pid)])
    assert "NETWORK" in line and " 17 " in line and "'udp.DstPort == 5300'" in line and "passthru" in line
    killed = _cli("kill", str(passthru.pid))
    assert killed.returncode == 0 and f"sent SIGTERM to {passthru.pid}" in killed.stdout, killed.stderr
    out, err = passthru.communicate(timeout=20)
    assert passthru.returncode == 0 and "passthru:" in out, err       # it stopped cleanly
    assert our_chains(netns) == []   # and took its rules away
    watched, _ = watcher.communicate(timeout=30)
    opened, closed = watched.splitlines()
    assert opened.startswith("OPEN") and closed.startswith("CLOSE") and str(passthru.pid) in opened
    assert "udp.DstPort = 5300" in opened and "NETWORK" in opened
    assert str(passthru.pid) not in _cli("list").stdout


def test_an_entry_not_written_by_its_processs_user_is_not_believed():
    """Anyone the registry lets write could claim another process's handle; such a claim is ignored."""
    import json
    name = f"{os.getpid()}-forged-{os.urandom(4).hex()}.json"
    path = os.path.join(handle_registry.DIRECTORY, name)
    honest = handle_registry.register(Layer.NETWORK, 3, 0, "tcp", 1)
    try:
        with open(path, "w") as forged:
            json.dump({"pid": os.getpid(), "start": handle_registry.process_start(os.getpid()), "layer": 0,
                       "priority": 9, "flags": 0, "filter": "true", "opened": 1}, forged)
        os.chown(path, 65534, 65534)
        names = {entry.name for entry in handle_registry.entries()}
        assert honest in names and name not in names
    finally:
        handle_registry.unregister(honest)
        os.unlink(path)
