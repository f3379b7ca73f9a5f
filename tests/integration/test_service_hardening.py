"""The privileged side trusts nothing it is given: the service restarts from a
minimal environment with only its three capabilities and no new privileges;
iptables is never found through PATH; the rule lock cannot be taken over or
hold a process past SIGTERM; a user touches only its own handles' rules."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from divertgui.engine.backends import netfilter_rules
from divertgui.engine.errors import NetfilterError
from divertgui.engine.handle import Divert
from divertgui.engine.store import CaptureStore
from divertgui.service.client import ServiceClient
from divertgui.service.hardening import MINIMAL_ENVIRONMENT
from tests.integration.conftest import require, wait_until
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


def test_divert_list_never_runs_an_iptables_found_through_path(netns, tmp_path):
    marker = tmp_path / "ran"
    fake = tmp_path / "iptables"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\n")
    fake.chmod(0o755)
    for name in ("ip6tables", "iptables-restore", "ip6tables-restore"):
        (tmp_path / name).symlink_to(fake)
    process = netns.popen([sys.executable, "-m", "divertgui.cli", "list"], env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "no divertgui handles" in out
    assert not marker.exists()


def test_iptables_runs_by_its_full_path_with_a_clean_environment_and_nothing_ambient(netns, tmp_path, monkeypatch):
    """A recording stand-in in place of the trusted directory shows what iptables is given."""
    log = tmp_path / "log"
    for name in ("iptables", "ip6tables", "iptables-restore", "ip6tables-restore"):
        wrapper = tmp_path / name
        wrapper.write_text(f"#!/bin/sh\n{{ echo \"argv0=$0\"; env; grep -E '^Cap(Amb|Inh)' /proc/self/status; }}"
                           f" >> {log}\nexec {netfilter_rules.tool_path(name)} \"$@\"\n")
        wrapper.chmod(0o755)
    monkeypatch.setattr(netfilter_rules, "TOOL_DIRECTORIES", (str(tmp_path),))
    monkeypatch.setenv("LD_PRELOAD", "/nonexistent.so")
    with netns.entered():
        netfilter_rules.list_handles()
    lines = log.read_text().splitlines()
    assert f"argv0={tmp_path}/iptables" in lines
    environment = {line for line in lines if "=" in line and not line.startswith(("argv0=", "PWD=", "SHLVL=", "_="))}
    assert environment == {f"{key}={value}" for key, value in netfilter_rules.TOOL_ENVIRONMENT.items()}
    assert {line.split(":")[1].strip() for line in lines if line.startswith("Cap")} == {"0000000000000000"}


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
