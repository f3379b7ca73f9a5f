"""What the capture service does to itself before it serves anyone.

1. It restarts itself from a minimal environment, in Python's isolated mode
   (-I) when it is not a bundle: no PYTHON* variable, no Qt variable, no
   user site directory, no current directory on the module path, no PATH
   of the caller's.
2. PR_SET_NO_NEW_PRIVS: nothing it runs can gain privileges through exec.
3. Of its capabilities it keeps CAP_NET_ADMIN and CAP_NET_RAW, and CAP_BPF
   for the FLOW and SOCKET layers' eBPF programs; root's others go from
   every set, the bounding set included, and nothing stays ambient or
   inheritable.
"""

from __future__ import annotations

import os
import sys

from divertgui.engine import privileges

MINIMAL_ENVIRONMENT = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}
PR_SET_NO_NEW_PRIVS = 38
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT_CLEAR_ALL = 4
CAP_SETPCAP = 8
KEPT = sum(1 << cap for cap in (*privileges.DIVERT_CAPABILITIES, privileges.CAP_BPF))


def is_clean(environ=None, flags=None, frozen=None, bundle_libraries=None) -> bool:
    environ = dict(os.environ if environ is None else environ)
    flags = sys.flags if flags is None else flags
    frozen = getattr(sys, "frozen", False) if frozen is None else frozen
    if frozen:
        # The bundle's bootloader starts itself again with these, whatever it was given:
        # its own variables, and paths into the bundle (LD_LIBRARY_PATH).
        bundle = getattr(sys, "_MEIPASS", None) if bundle_libraries is None else bundle_libraries
        environ = {key: value for key, value in environ.items()
                   if not key.startswith("_PYI_") and not _inside(value, bundle)}
    return environ == MINIMAL_ENVIRONMENT and (frozen or bool(flags.isolated))


def _inside(value: str, bundle: str | None) -> bool:
    """Whether `value` is one or more paths, each inside the (root-owned) bundle directory."""
    if not bundle:
        return False
    parts = value.split(os.pathsep)
    return all(part == bundle or part.startswith(bundle.rstrip("/") + "/") for part in parts)


def clean_command(arguments: list[str], frozen=None) -> list[str]:
    """The command line that runs this service again with `arguments` (those after the program)."""
    frozen = getattr(sys, "frozen", False) if frozen is None else frozen
    if frozen:
        return [sys.executable, *arguments]
    return [sys.executable, "-I", "-m", "divertgui.cli", *arguments]


def started_with() -> dict[str, str]:
    """The environment this process was started with (os.environ may have changed since: the
    bundle's runtime hooks set variables of their own)."""
    try:
        with open("/proc/self/environ", "rb") as f:
            items = [item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item]
    except PermissionError:
        # Started through file capabilities, the process cannot be dumped and its /proc files are
        # root's: the environment Python read at start is what there is.
        return dict(os.environ)
    return {os.fsdecode(key): os.fsdecode(value) for key, value in items}


def restart_clean(arguments: list[str]) -> None:
    """exec() this service again from a minimal environment, unless it already runs from one."""
    if is_clean(started_with()):
        return
    command = clean_command(arguments)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, MINIMAL_ENVIRONMENT)


def no_new_privileges() -> None:
    privileges.prctl(PR_SET_NO_NEW_PRIVS, 1, 0)


def keep_only_capture_capabilities() -> None:
    """Every capability but CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF leaves every set of this (still single)
    thread."""
    sets = privileges.current()
    if sets.effective >> CAP_SETPCAP & 1:
        for cap in range(64):
            if sets.bounding >> cap & 1 and not KEPT >> cap & 1:
                privileges.prctl(PR_CAPBSET_DROP, cap, 0)
    privileges.prctl(privileges.PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0)
    header, data = privileges.capget()
    for index, word in enumerate(data):
        mask = KEPT >> (32 * index) & 0xFFFFFFFF
        word.permitted &= mask
        word.effective = word.permitted
        word.inheritable = 0
    privileges.capset(header, data)


def harden(arguments: list[str]) -> None:
    """All of the above, Linux only; the first thing `divert serve` does."""
    if not sys.platform.startswith("linux"):
        return
    restart_clean(arguments)
    no_new_privileges()
    keep_only_capture_capabilities()
