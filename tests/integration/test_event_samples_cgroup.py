"""`divert socketdump --cgroup` and `divert flowtrack --cgroup` run as real processes: the events
of the processes in the cgroup the test creates are printed, those of a process outside are not,
and a cgroup path that is missing or leads out of the mount is refused before anything loads."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time

import pytest

from divertgui.engine.backends.cgroups import cgroup2_mount

from .conftest import REPO
from .socket_layer_fixtures import own_cgroup, run_in

pytestmark = pytest.mark.netns
__all__ = ["own_cgroup"]

READY = "Ctrl+C to stop"
# Sends one datagram to the port argv[1] on loopback and ends.
ONE_DATAGRAM = "import socket, sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', int(sys.argv[1])))"


def _divert(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "divertgui.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)


def _started(process: subprocess.Popen) -> str:
    """What the sample said on stderr up to its ready line."""
    seen = ""
    end = time.monotonic() + 20
    while READY not in seen and time.monotonic() < end and process.poll() is None:
        if select.select([process.stderr], [], [], 0.5)[0]:
            seen += process.stderr.readline()
    if READY not in seen:
        process.kill()
        pytest.fail(f"divert did not start: {seen}{process.communicate(timeout=10)[1]}")
    return seen


@pytest.mark.parametrize("sample,filter_text,program", [
    ("socketdump", "tcp and event == CONNECT and remotePort == 8105", ("curl", "-s", "http://127.0.0.1:8105/")),
    ("flowtrack", "udp and remotePort == 8106", (sys.executable, "-c", ONE_DATAGRAM, "8106")),
])
def test_only_the_cgroups_processes_are_printed(netns, own_cgroup, sample, filter_text, program):
    cgroup = os.path.relpath(own_cgroup, cgroup2_mount())
    dump = _divert(sample, filter_text, "--cgroup", cgroup, "-c", "1")
    try:
        said = _started(dump)
        outside = netns.exec(*program, check=False)
        inside, inside_result = run_in(netns, own_cgroup, *program)
        out, err = dump.communicate(timeout=20)
    finally:
        if dump.poll() is None:
            dump.kill()
            dump.communicate(timeout=10)
    assert outside.returncode == inside_result.returncode, "both programs did the same"
    assert dump.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 1 and lines[0].split()[1] == str(inside), out
    assert f"of the cgroup {cgroup}" in said


@pytest.mark.parametrize("cgroup,says", [
    ("divertgui-no-such-cgroup", "there is no cgroup divertgui-no-such-cgroup under "),
    ("../..", "PATH must be a cgroup path under the cgroup v2 mount"),
    ("/sys/fs/cgroup", "PATH must be a cgroup path under the cgroup v2 mount"),
    ("a//b", "PATH must be a cgroup path under the cgroup v2 mount"),
])
@pytest.mark.parametrize("sample", ["socketdump", "flowtrack"])
def test_a_missing_or_escaping_cgroup_is_a_usage_error(sample, cgroup, says):
    out, err = _divert(sample, "--cgroup", cgroup).communicate(timeout=30)
    assert says in err and "argument --cgroup" in err, err
