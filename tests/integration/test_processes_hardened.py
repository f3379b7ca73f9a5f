"""A program holding every capability, run from a root shell, is named on its packets by a
capture that keeps only the service's three capabilities (which may not read that program's
/proc/PID/fd): the kernel recorded the socket's creator as the program made it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from divertgui.engine.backends import bpf_syscall
from divertgui.engine.backends.cgroups import cgroup2_mount, open_cgroup
from tests.integration.conftest import REPO
from tests.integration.socket_layer_fixtures import own_cgroup, start_in
from tests.integration.test_processes_netns import SENDER, say

pytestmark = pytest.mark.netns
__all__ = ["own_cgroup"]
NET_ADMIN_RAW_AND_BPF = 1 << 12 | 1 << 13 | 1 << 39


def attached(cgroup: str) -> list[int]:
    fd = open_cgroup(cgroup)
    try:
        return bpf_syscall.query_cgroup(fd, bpf_syscall.ATTACH_INET_SOCK_CREATE)
    finally:
        os.close(fd)


def hardened_capture(netns, cgroup: str, port: int) -> subprocess.Popen:
    # nsenter joins the network namespace alone, leaving the cgroup file system in view.
    return subprocess.Popen([shutil.which("nsenter"), f"--net=/run/netns/{netns.name}", sys.executable, "-m",
                             "tests.integration.hardened_capture", os.path.relpath(cgroup, cgroup2_mount()),
                             str(port)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=REPO))


def read(process: subprocess.Popen) -> dict:
    line = process.stdout.readline()
    if not line:
        process.kill()
        pytest.fail(f"the capture ended: {process.stderr.read()}")
    return json.loads(line)


@pytest.mark.parametrize("ending", ["close", "kill"])
def test_a_root_program_with_every_capability_is_named_through_a_hardened_capture(netns, own_cgroup, ending):
    with netns.entered():
        import socket
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.bind(("127.0.0.1", 0))
    port = receiver.getsockname()[1]
    capture = hardened_capture(netns, own_cgroup, port)
    sender = None
    try:
        ready = read(capture)
        assert int(ready["capabilities"], 16) == NET_ADMIN_RAW_AND_BPF and ready["attached"] == 1, ready
        sender = start_in(netns, own_cgroup, sys.executable, "-c", SENDER, "udp", str(port), stdin=subprocess.PIPE)
        pid = int(sender.stdout.readline().split()[0])
        with open(f"/proc/{pid}/status") as status:
            assert int(next(line.split()[1] for line in status if line.startswith("CapEff:")), 16) \
                & ~NET_ADMIN_RAW_AND_BPF, "the sender should hold capabilities the capture lacks"
        for i in range(3):
            say(sender, f"datagram {i}")
        capture.stdin.write("3\n")
        capture.stdin.flush()
        report = read(capture)
        assert report["pids"] == [pid] * 3, report
        assert all(name.startswith("python") for name in report["names"]), report
        assert report["created"] == 1, report
        if ending == "close":
            capture.stdin.write("stop\n")
            capture.stdin.flush()
            assert read(capture)["attached"] == 0
            capture.wait(timeout=20)
        else:
            capture.send_signal(signal.SIGKILL)
            capture.wait(timeout=20)
        assert attached(own_cgroup) == []
    finally:
        if capture.poll() is None:
            capture.kill()
            capture.wait(timeout=20)
        if sender is not None:
            sender.stdin.close()
            sender.wait(timeout=10)
        receiver.close()
