"""The privileged side trusts nothing it is given: the service restarts from a
minimal environment with only its three capabilities and no new privileges;
it runs no program at all and makes no capability ambient; the rule lock
cannot be taken over or hold a process past SIGTERM; a user touches only its
own handles' rules."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from divertgui.engine.backends import netfilter_rules
from divertgui.engine.errors import NetfilterError
from divertgui.engine.handle import Divert
from divertgui.engine.store import CaptureStore
from divertgui.service.client import ServiceClient
from divertgui.service.hardening import MINIMAL_ENVIRONMENT
from tests.integration.conftest import our_chains, require, wait_until
from tests.integration.test_capabilities import BECOME_NOBODY

pytestmark = pytest.mark.netns
NET_ADMIN_RAW_AND_BPF = 1 << 12 | 1 << 13 | 1 << 39


def status_of(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)


def test_the_service_restarts_clean_with_three_capabilities_and_no_new_privileges(monkeypatch, tmp_path):
    require(None if os.geteuid() == 0 else "the capability sets of a root service need root")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("PYTHONWARNINGS", "error")
    monkeypatch.setenv("QT_QPA_PLATFORM_PLUGIN_PATH", str(tmp_path))
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    client = ServiceClient("local", CaptureStore(), lambda event: None)
    client.start()
    try:
        assert wait_until(lambda: client.hello, 20), client.stderr_text()
        pid = client.hello["pid"]
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if item)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read().split(b"\0")
        with open(f"/proc/{pid}/maps") as f:
            maps = f.read()
        status = status_of(pid)
    finally:
        client.close()
    assert environ == {key.encode(): value.encode() for key, value in MINIMAL_ENVIRONMENT.items()}
    assert b"-I" in command
    assert status["NoNewPrivs"].strip() == "1"
    for field in ("CapPrm", "CapEff", "CapBnd"):
        assert int(status[field], 16) == NET_ADMIN_RAW_AND_BPF, field
    assert int(status["CapInh"], 16) == int(status["CapAmb"], 16) == 0
    assert "libQt6" not in maps and "PySide6" not in maps


# Programs the rules were once made with, and what might load kernel modules: each a fake that leaves a mark.
FAKED = ("iptables", "ip6tables", "iptables-restore", "ip6tables-restore", "iptables-nft", "xtables-nft-multi",
         "nft", "modprobe")


def fake_programs(marks: str) -> str:
    """A directory every user may read, holding FAKED: each writes its name into `marks`."""
    directory = tempfile.mkdtemp(prefix="divertgui-fakes-")
    os.chmod(directory, 0o755)
    for name in FAKED:
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\necho {name} >> {marks}/ran\n")
        os.chmod(path, 0o755)
    return directory


@pytest.fixture
def fakes():
    marks = tempfile.mkdtemp(prefix="divertgui-marks-")
    os.chmod(marks, 0o1777)     # uid 65534 can leave its mark too
    directory = fake_programs(marks)
    yield directory, os.path.join(marks, "ran")
    shutil.rmtree(directory)
    shutil.rmtree(marks)


def test_divert_list_never_runs_a_program_found_through_path(netns, fakes):
    directory, ran = fakes
    process = netns.popen([sys.executable, "-m", "divertgui.cli", "list"], env={"PATH": f"{directory}:/usr/bin:/bin"},
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "no divertgui handles" in out
    assert not os.path.exists(ran)


# Watches, from inside, for any program started and any capability made ambient: the audit
# hook sees every way Python starts a process and every prctl() call through ctypes.
CAPTURE_WATCHING_CHILDREN = """
import contextlib, glob, resource, threading  # noqa: F401  (imported while the interpreter is readable)
import divertgui.engine.session, divertgui.engine.backends.nfqueue
from divertgui.service.hardening import keep_only_capture_capabilities, no_new_privileges
from tests.unit.session_harness import Running
""" + BECOME_NOBODY + """
no_new_privileges()
keep_only_capture_capabilities()
started, raised, children, ambient = [], [], set(), set()
PRCTL = ctypes.cast(libc.prctl, ctypes.c_void_p).value
SPAWNING = ("subprocess.Popen", "os.exec", "os.posix_spawn", "os.fork", "os.forkpty", "os.system", "os.spawn",
            "pty.spawn")


def audit(event, args):
    if event in SPAWNING:
        started.append([event, repr(args)[:200]])
    elif event == "ctypes.call_function" and args[0] == PRCTL and args[1][:2] == (PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE):
        raised.append(list(args[1]))


sys.addaudithook(audit)
watching = threading.Event()


def watch():
    while not watching.is_set():
        for path in glob.glob("/proc/self/task/*/children"):
            with contextlib.suppress(OSError), open(path) as f:
                children.update(f.read().split())
        for path in glob.glob("/proc/self/task/*/status"):
            with contextlib.suppress(OSError), open(path) as f:
                ambient.update(line.split()[1] for line in f if line.startswith("CapAmb:"))
        time.sleep(0.005)


watcher = threading.Thread(target=watch, daemon=True)
watcher.start()
running = Running()
running.post("start", source="live", mode="divert", priority=0, layer="NETWORK", filter="udp.DstPort == PORT")
state = running.wait_for(lambda e: e["type"] in ("state", "error"), "state event")
assert state["type"] == "state", state
client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(COUNT):
    client.sendto(b"datagram %d" % i, ("127.0.0.1", PORT))
running.until(lambda: len(running.store) >= COUNT, "the packets")
report = {"uid": os.getuid(), "state": state, "captured": len(running.store)}
running.post("stop")
running.until(lambda: not netfilter_rules.list_handles(), "the rules' removal")
running.stop()
watching.set()
watcher.join()
report.update(started=started, raised=raised, children=sorted(children), ambient=sorted(ambient))
print(json.dumps(report))
""".replace("PORT", "40093").replace("COUNT", "5")


def test_the_file_capability_service_captures_without_running_any_program(netns, fakes):
    """As the installed capture program runs for a member of the group divertgui: uid 65534 with
    CAP_NET_ADMIN and CAP_NET_RAW from file capabilities, nothing inheritable or ambient, no new
    privileges. Every directory a program could be found in holds fakes that mark their running."""
    directory, ran = fakes
    hide = f"mount -t tmpfs fakes /usr/sbin && cp -a {directory}/. /usr/sbin/"
    if not os.path.islink("/sbin"):
        hide += f" && mount -t tmpfs fakes /sbin && cp -a {directory}/. /sbin/"
    process = netns.popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", f'{hide} && exec "$@"',
                           "sh", sys.executable, "-c", CAPTURE_WATCHING_CHILDREN, "file"],
                          env={"PATH": f"{directory}:/usr/local/bin:/usr/bin:/bin"},
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=90)
    assert process.returncode == 0, err
    report = json.loads(out.splitlines()[-1])
    assert report["uid"] == 65534
    assert report["state"]["type"] == "state" and report["state"]["source"] == "live", report["state"]
    assert report["captured"] >= 5
    assert report["started"] == [] and report["children"] == []
    assert not os.path.exists(ran)
    assert report["raised"] == [] and report["ambient"] == ["0000000000000000"]
    assert our_chains(netns) == []


def test_the_rule_lock_is_roots_and_a_held_lock_does_not_outlast_sigterm(netns):
    fd = netfilter_rules.open_rule_lock()
    info = os.fstat(fd)
    assert stat.S_ISREG(info.st_mode) and info.st_uid == 0 and not info.st_mode & 0o006
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        process = netns.popen([sys.executable, "-m", "divertgui.cli", "passthru", "udp.DstPort == 9"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert wait_until(lambda: _waiting_on(process.pid, fd), 20), "passthru never waited for the lock"
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=netfilter_rules.LOCK_TIMEOUT)
    finally:
        os.close(fd)
    assert process.returncode == 1
    assert f"another process has held the rule lock {netfilter_rules.LOCK_DIRECTORY}/rules.lock" in err


def _waiting_on(pid: int, fd: int) -> bool:
    """Whether process `pid` has the rule lock open (and so is waiting for our lock)."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
        return any(os.readlink(f"/proc/{pid}/fd/{n}") == target for n in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def _lock_as_nobody(report: int) -> None:
    """In a child become uid 65533, outside the capture group: lock what it can of the rule lock, say
    what, and hold on."""
    try:
        os.setgroups([])
        os.setresgid(65533, 65533, 65533)
        os.setresuid(65533, 65533, 65533)
        directory = os.open(netfilter_rules.LOCK_DIRECTORY, os.O_RDONLY)
        fcntl.flock(directory, fcntl.LOCK_EX)
        try:
            os.open(os.path.join(netfilter_rules.LOCK_DIRECTORY, netfilter_rules.LOCK_FILE), os.O_RDONLY)
            said = b"opened the lock file\n"
        except PermissionError:
            said = b"locked the directory only\n"
        os.write(report, said)
        time.sleep(60)
    finally:
        os._exit(0)


def test_another_user_cannot_hold_the_rule_lock(netns):
    os.close(netfilter_rules.open_rule_lock())
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        _lock_as_nobody(write)
    os.close(write)
    try:
        with os.fdopen(read, "rb") as said:
            assert said.readline() == b"locked the directory only\n"
        with netns.entered(), Divert("udp.DstPort == 9") as handle:
            assert handle.is_open
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


def test_the_lock_directory_is_refused_when_another_user_could_replace_it(tmp_path, monkeypatch):
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    monkeypatch.setattr(netfilter_rules, "LOCK_DIRECTORY", str(loose))
    with pytest.raises(NetfilterError, match="writable by no other user"):
        netfilter_rules.open_lock_directory()
    link = tmp_path / "link"
    link.symlink_to("/run")
    monkeypatch.setattr(netfilter_rules, "LOCK_DIRECTORY", str(link))
    with pytest.raises(NetfilterError, match="cannot open the lock directory"):
        netfilter_rules.open_lock_directory()


# Imported before the user changes: the interpreter may live where uid 65534 cannot read it.
CLEANUP_ALL_AS_NOBODY = """
import contextlib, io
import divertgui.cli, divertgui.handle_commands, divertgui.engine.filter, divertgui.engine.handle
divertgui.cli.build_parser()
""" + BECOME_NOBODY + """
removed = netfilter_rules.cleanup(dead_only=False)
said = io.StringIO()
with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
    code = divertgui.cli.main(["kill", "--all"])
print(json.dumps({"uid": os.getuid(), "removed": [c.name for c in removed],
                  "listed": [c.name for c in netfilter_rules.list_handles()], "kill": [code, said.getvalue()]}))
"""


def test_another_user_can_neither_see_nor_remove_nor_kill_a_running_handle(netns):
    with netns.entered(), Divert("udp.DstPort == 9"):
        process = netns.popen([sys.executable, "-c", CLEANUP_ALL_AS_NOBODY, "file"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        report = json.loads(out.splitlines()[-1])
        still = sorted(c.name for c in netfilter_rules.list_handles() if c.pid == os.getpid())
    assert report["uid"] == 65534
    assert report["removed"] == [] and report["listed"] == []
    assert report["kill"] == [0, "no process holds a divert handle\n"]
    assert still
