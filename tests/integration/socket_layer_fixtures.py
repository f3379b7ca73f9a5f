"""A cgroup v2 of the test's own for the SOCKET layer's eBPF programs, and programs run inside it.

cgroup programs see the sockets of the processes in their cgroup whatever
their network namespace, so the tests attach to a cgroup they create and
move only their own children into it, never the machine's root cgroup.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import time

import pytest

from divertgui.engine.address import Flag, Layer
from divertgui.engine.backends.cgroups import CgroupError, cgroup2_mount
from divertgui.engine.backends.socket_layer import SocketBackend
from divertgui.engine.handle import Divert

from .conftest import REPO, require, require_prerequisites

_names = itertools.count()
# The child moves itself into the cgroup before it becomes the program under test.
_ENTER = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
SNIFF = Flag.SNIFF | Flag.RECV_ONLY


@pytest.fixture
def own_cgroup():
    require_prerequisites()
    try:
        root = cgroup2_mount()
    except CgroupError as exc:
        require(str(exc))
    path = os.path.join(root, f"divertgui-test-{os.getpid()}-{next(_names)}")
    os.mkdir(path)
    yield path
    for _ in range(100):
        with open(os.path.join(path, "cgroup.procs")) as procs:
            pids = [int(pid) for pid in procs.read().split()]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    os.rmdir(path)


def start_in(ns, cgroup: str, *args: str, stdin=None) -> subprocess.Popen:
    """A program inside the cgroup and the namespace; its pid is the program's own.

    It joins the cgroup before `ip netns exec`, which hides the cgroup file
    system behind a fresh /sys; both steps exec, so the pid stays the same.
    The cgroup fixture kills what is left at the end.
    """
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(["/bin/sh", "-c", _ENTER, cgroup, shutil.which("ip"), "netns", "exec", ns.name, *args],
                            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def run_in(ns, cgroup: str, *args: str, timeout: float = 20) -> tuple[int, subprocess.CompletedProcess]:
    """(pid, result) of a program run to its end inside the namespace and the cgroup."""
    process = start_in(ns, cgroup, *args)
    out, err = process.communicate(timeout=timeout)
    return process.pid, subprocess.CompletedProcess(args, process.returncode, out, err)


def handle_after_server(ns, cgroup: str, server: tuple, ready: str, open_handle) -> tuple[subprocess.Popen, Divert]:
    """(server, handle): a server program started in the namespace and the cgroup, which prints
    `ready`; then `open_handle()`'s handle, opened inside the namespace so that its socket
    diagnostics find the server's sockets there."""
    process = start_in(ns, cgroup, *server)
    assert process.stdout.readline().strip() == ready
    with ns.entered():
        return process, open_handle()


def socket_handle(cgroup: str, filter: str, flags: Flag = SNIFF) -> Divert:
    return Divert(filter, Layer.SOCKET, flags=flags, backend=SocketBackend(cgroup)).open()


def events_until(handle: Divert, done, seconds: float = 10) -> list:
    """Events received until `done(events)` holds or `seconds` pass (no timing is asserted)."""
    events = []
    end = time.monotonic() + seconds
    while not done(events) and time.monotonic() < end:
        events += [packet.address for packet in handle.recv_batch(64, 0.2)]
    return events


def ipv4(text: str) -> int:
    a, b, c, d = (int(part) for part in text.split("."))
    return 0xFFFF00000000 | a << 24 | b << 16 | c << 8 | d
