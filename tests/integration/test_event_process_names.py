"""Events of programs that ended before the events were read still name their process: the
kernel's name for it travels with the event (EndpointData.process_name) and stands in when
/proc no longer knows the pid, in the Events view's records and in `divert socketdump`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from divertgui.engine.address import Event, Layer
from divertgui.engine.backends.cgroups import cgroup2_mount
from divertgui.engine.event_capture import EventCapture
from divertgui.event_samples import event_line

from .conftest import REPO
from .socket_layer_fixtures import events_until, own_cgroup, run_in, socket_handle

pytestmark = pytest.mark.netns
__all__ = ["own_cgroup"]

# A one-shot that renames itself (so that nothing else here has its name), sends one
# datagram and ends.
ONE_SHOT = textwrap.dedent("""
    import socket, sys
    open("/proc/self/comm", "w").write("one-shot-udp")
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", int(sys.argv[1])))
""")


def _records(capture: EventCapture, done, seconds: float = 10) -> list:
    """The records polled until `done(records)` holds or `seconds` pass (no timing is asserted)."""
    records = []
    end = time.monotonic() + seconds
    while not done(records) and time.monotonic() < end:
        time.sleep(0.1)
        records += capture.poll()
    return records


def test_events_of_programs_that_have_exited_name_them(netns, own_cgroup):
    cgroup = os.path.relpath(own_cgroup, cgroup2_mount())
    filters = {Layer.FLOW: "udp and remotePort == 8101", Layer.SOCKET: "tcp and remotePort == 8102"}
    capture = EventCapture(filters, cgroup).open()
    try:
        one_shot, _ = run_in(netns, own_cgroup, sys.executable, "-c", ONE_SHOT, "8101")
        curl, result = run_in(netns, own_cgroup, "curl", "-s", "http://127.0.0.1:8102/")   # refused: nobody listens
        assert result.returncode != 0
        for pid in (one_shot, curl):
            assert not os.path.exists(f"/proc/{pid}")
        records = _records(capture, lambda seen: {r.pid for r in seen} >= {one_shot, curl}
                              and sum(r.event == Event.SOCKET_CLOSE for r in seen) >= 1)
    finally:
        capture.close()
    names = {(r.layer, r.event_name, r.pid, r.process) for r in records}
    assert (Layer.FLOW, "ESTABLISHED", one_shot, "one-shot-udp") in names, records
    assert (Layer.SOCKET, "CONNECT", curl, "curl") in names, records
    assert (Layer.SOCKET, "CLOSE", curl, "curl") in names, records


def test_socketdump_names_a_program_that_has_exited(netns, own_cgroup):
    with socket_handle(own_cgroup, "tcp and event == CONNECT and remotePort == 8103") as handle:
        curl, _ = run_in(netns, own_cgroup, "curl", "-s", "http://127.0.0.1:8103/")
        events = events_until(handle, lambda seen: len(seen) >= 1)
    assert not os.path.exists(f"/proc/{curl}")
    assert event_line(events[0]).startswith(f"CONNECT     {curl:>7} curl "), event_line(events[0])


# Opens a SOCKET handle on the cgroup given, reports whether names can be read, then one event.
WITHOUT_PERFMON = textwrap.dedent("""
    import sys
    from divertgui.engine.backends.socket_programs import names_readable
    from tests.integration.socket_layer_fixtures import events_until, socket_handle
    with socket_handle(sys.argv[1], "tcp and event == CONNECT and remotePort == 8104") as handle:
        print(names_readable(), flush=True)
        sys.stdin.readline()
        event, = events_until(handle, lambda seen: len(seen) >= 1)
    print(event.flow.process_id, repr(event.flow.process_name), flush=True)
""")


def test_without_cap_perfmon_the_programs_load_and_record_no_name(netns, own_cgroup):
    """As in the capture service, which keeps CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF alone."""
    holder = subprocess.Popen([shutil.which("setpriv"), "--bounding-set=-sys_admin,-perfmon", sys.executable,
                               "-c", WITHOUT_PERFMON, own_cgroup], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "False"
        curl, _ = run_in(netns, own_cgroup, "curl", "-s", "http://127.0.0.1:8104/")
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == f"{curl} ''"
    finally:
        holder.kill()
        holder.wait(timeout=10)
