"""`divert doctor` opens the rule lock as a capture would: run as uid 65534 holding the installed
program's capabilities, it fails naming the lock when the lock's group is not the user's, and passes
when it is. Each run has its own mount namespace with a tmpfs over /run, holding a lock made for
the test, so the machine's own lock is never touched."""

from __future__ import annotations

import grp
import os
import shutil
import subprocess
import sys

import pytest

from divertgui.service.hardening import MINIMAL_ENVIRONMENT
from tests.integration.conftest import require
from tests.integration.test_workers_file_capabilities import DIVERT_AS_MEMBER

LOCK = "/run/divertgui/rules.lock"
NOBODY = 65534


def doctor_in_private_run(make_lock: str, as_member: bool = True) -> tuple[subprocess.CompletedProcess, str]:
    """`divert doctor` (as uid 65534 with the capture capabilities, or as root) over a private /run
    where `make_lock` has run; the doctor's output and what /run/divertgui holds after it."""
    require(None if os.geteuid() == 0 else "a private mount namespace needs root")
    require(None if shutil.which("unshare") else "unshare (util-linux) is needed for a private mount namespace")
    doctor = [sys.executable, "-I", "-c", DIVERT_AS_MEMBER, "file", "doctor"] if as_member else \
        [sys.executable, "-I", "-m", "divertgui.cli", "doctor"]
    script = ("mount -t tmpfs -o mode=0755 divertgui-doctor-test /run && mkdir -m 0755 /run/divertgui && "
              f"{make_lock}\n\"$@\"\ncode=$?\necho contents: $(ls -A /run/divertgui) >&2\nexit $code")
    result = subprocess.run([shutil.which("unshare"), "--mount", "--propagation", "private", "sh", "-c", script,
                             "sh", *doctor], env=MINIMAL_ENVIRONMENT, cwd="/", capture_output=True, text=True,
                            timeout=120)
    return result, result.stderr.rpartition("contents:")[2].strip()


def lock_line(out: str) -> tuple[str, str]:
    """The doctor's rule lock line and the line after it."""
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line[8:].startswith("rule lock"))
    return lines[at], lines[at + 1] if at + 1 < len(lines) else ""


def test_doctor_fails_naming_the_lock_a_member_of_another_group_cannot_open():
    other = next(g for g in grp.getgrall() if g.gr_gid not in (0, NOBODY))
    result, _ = doctor_in_private_run(f"install -o root -g {other.gr_gid} -m 0640 /dev/null {LOCK}")
    line, fix = lock_line(result.stdout)
    assert line.startswith("MISSING rule lock"), result.stdout + result.stderr
    assert f"cannot open the rule lock {LOCK}: Permission denied" in line
    assert fix.strip() == (f"fix: the lock belongs to the group {other.gr_name}: add nobody to it "
                           f"(`sudo usermod -aG {other.gr_name} nobody`) and log in again")
    assert "given to this user's process, not root" in result.stdout, "the capture capabilities were held"
    assert result.stdout.splitlines()[-1] == "diverting packets: not possible until the MISSING items above are fixed"
    assert result.returncode == 1


def test_doctor_tells_how_to_give_a_root_only_lock_to_the_capture_group():
    result, _ = doctor_in_private_run(f"install -o root -g root -m 0600 /dev/null {LOCK}")
    line, fix = lock_line(result.stdout)
    assert line.startswith("MISSING rule lock") and f"{LOCK}: Permission denied" in line, result.stdout
    assert f"sudo chgrp divertgui {LOCK} && sudo chmod 0640 {LOCK}" in fix
    assert result.returncode == 1


def test_doctor_passes_for_a_member_of_the_lock_group():
    result, _ = doctor_in_private_run(f"install -o root -g {NOBODY} -m 0640 /dev/null {LOCK}")
    line, _ = lock_line(result.stdout)
    assert line.startswith(f"ok      rule lock   the rule lock {LOCK} opens"), result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "diverting packets: possible", result.stdout
    assert result.returncode == 0


def test_doctor_as_root_says_it_would_make_a_missing_lock_and_makes_nothing():
    result, contents = doctor_in_private_run("true", as_member=False)
    line, _ = lock_line(result.stdout)
    assert line.startswith(f"ok      rule lock   the rule lock {LOCK} does not exist yet: this process, as root, "
                           f"makes it at its first capture"), result.stdout + result.stderr
    assert contents == "", "the doctor left the lock directory as it found it"


def test_doctor_as_a_member_names_a_missing_lock():
    result, contents = doctor_in_private_run("true")
    line, fix = lock_line(result.stdout)
    assert line.startswith(f"MISSING rule lock   the rule lock {LOCK} does not exist"), result.stdout + result.stderr
    assert "packaging/install-linux.sh" in fix
    assert contents == "" and result.returncode == 1
