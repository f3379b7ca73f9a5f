"""Whether this process may divert packets, and the calls that read and
change its capabilities.

Diverting needs CAP_NET_ADMIN (netfilter rules, NFQUEUE and NFLOG groups);
injecting new packets needs CAP_NET_RAW (raw sockets). Root has both, and so
has the capture program given them as file capabilities by
packaging/install-linux.sh. Everything is done over netlink and sockets in
this process, so no capability is ever handed on to a program it runs.

Capabilities belong to a thread, not to the process: everything here reads
and changes the calling thread's.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import sys

from divertgui.engine.errors import PrerequisiteError, PrivilegeError

CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
DIVERT_CAPABILITIES = (CAP_NET_ADMIN, CAP_NET_RAW)
# The FLOW and SOCKET layers load eBPF programs and attach them to a cgroup: CAP_BPF besides.
CAP_BPF = 39
CAPABILITY_NAMES = {CAP_NET_ADMIN: "CAP_NET_ADMIN", CAP_NET_RAW: "CAP_NET_RAW"}
STATUS_FIELDS = {"CapInh": "inheritable", "CapPrm": "permitted", "CapEff": "effective",
                 "CapBnd": "bounding", "CapAmb": "ambient"}
INSTALL_SCRIPT = "packaging/install-linux.sh"
CAPTURE_GROUP = "divertgui"

PR_CAP_AMBIENT = 47
LINUX_CAPABILITY_VERSION_3 = 0x20080522


@dataclasses.dataclass(frozen=True)
class CapabilitySets:
    """A thread's capability sets as bit masks (bit n = capability n)."""

    inheritable: int = 0
    permitted: int = 0
    effective: int = 0
    bounding: int = 0
    ambient: int = 0

    def has(self, capability: int) -> bool:
        """Whether the capability is in effect now."""
        return bool(self.effective >> capability & 1)


def parse_status(text: str, source: str = "/proc/self/status") -> CapabilitySets:
    """The Cap* lines of a /proc/<pid>/status text."""
    found = {}
    for number, line in enumerate(text.splitlines(), 1):
        key, _, value = line.partition(":")
        if key in STATUS_FIELDS:
            try:
                found[STATUS_FIELDS[key]] = int(value.strip(), 16)
            except ValueError:
                raise ValueError(f"{source} line {number}: {key} is not a hexadecimal mask: "
                                 f"{value.strip()!r}") from None
    if "effective" not in found:
        raise ValueError(f"{source} has no CapEff line")
    return CapabilitySets(**found)


def current() -> CapabilitySets:
    """The calling thread's capability sets."""
    for path in ("/proc/thread-self/status", "/proc/self/status"):
        try:
            with open(path) as f:
                return parse_status(f.read(), path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise PrivilegeError(exc.errno, f"cannot read {path}: {exc.strerror}") from exc
    raise PrivilegeError("cannot read the capability sets: /proc is not mounted")


def _sets_or_current(sets: CapabilitySets | None) -> CapabilitySets | None:
    if sets is not None:
        return sets
    if not sys.platform.startswith("linux"):
        return None
    try:
        return current()
    except (PrivilegeError, ValueError):
        # Without /proc nothing says otherwise: root is taken to hold every capability.
        everything = ~0 if os.geteuid() == 0 else 0
        return CapabilitySets(effective=everything, permitted=everything)


def missing_capabilities(sets: CapabilitySets | None = None) -> list[str]:
    """The names of the capabilities diverting needs that are not in effect."""
    sets = _sets_or_current(sets)
    if sets is None:
        return []
    return [CAPABILITY_NAMES[cap] for cap in DIVERT_CAPABILITIES if not sets.has(cap)]


def may_divert(sets: CapabilitySets | None = None) -> bool:
    """Whether this process may install netfilter rules and read NFQUEUE (Linux), or is elevated (Windows)."""
    if sets is None and sys.platform == "win32":
        return _windows_elevated()
    sets = _sets_or_current(sets)
    return sets is not None and sets.has(CAP_NET_ADMIN)


def may_inject(sets: CapabilitySets | None = None) -> bool:
    """Whether this process may send packets through raw sockets."""
    if sets is None and sys.platform == "win32":
        return _windows_elevated()
    sets = _sets_or_current(sets)
    return sets is not None and sets.has(CAP_NET_RAW)


def _windows_elevated() -> bool:
    try:
        return bool(ctypes.windll.shell32.IsUserAnAdmin())
    except (AttributeError, OSError):
        return False


def how_to_get(missing: list[str]) -> str:
    """The action that gives this program the capabilities `missing` names."""
    if sys.platform == "win32":
        return "start divertgui or divert from an elevated prompt (Run as administrator)"
    granted = "this capability" if len(missing) == 1 else "these capabilities"
    return (f"run it as root (sudo), or install it with {INSTALL_SCRIPT}, which gives the installed "
            f"divert {granted} for the members of the group {CAPTURE_GROUP}")


def privilege_sentence(missing: list[str] | None = None) -> str:
    """What is missing and how to get it, in one sentence (by default, what this thread lacks)."""
    if sys.platform == "win32":
        return f"capturing needs Administrator rights, which this process does not have: {how_to_get([])}"
    if missing is None:
        missing = missing_capabilities() or list(CAPABILITY_NAMES.values())
    return f"diverting packets needs {' and '.join(missing)}, which this process does not have: {how_to_get(missing)}"


def missing_privilege(sets: CapabilitySets | None = None) -> str | None:
    """The sentence saying what diverting lacks here, or None when nothing is missing."""
    if sets is None and sys.platform == "win32":
        return None if _windows_elevated() else privilege_sentence()
    missing = missing_capabilities(sets)
    return privilege_sentence(missing) if missing else None


def live_capture_problem() -> str | None:
    """Why this process cannot capture live traffic, in one sentence; None when it can."""
    if sys.platform.startswith("linux"):
        from divertgui.engine.backends.nfqueue import check_prerequisites
        try:
            check_prerequisites()
        except PrerequisiteError as exc:
            return str(exc)
        return None
    if sys.platform == "win32":
        return missing_privilege()
    return (f"divertgui captures live traffic on Linux (netfilter) and Windows (WinDivert) only, "
            f"not on {sys.platform}")


# -- the system calls ---------------------------------------------------------------------

class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_libc = None


def _c_library():
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        _libc = libc
    return _libc


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise PrivilegeError(err, f"{what}: {os.strerror(err)}")
    return result


def capget():
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_c_library().capget(ctypes.byref(header), data), "capget")
    return header, data


def capset(header, data) -> None:
    _check(_c_library().capset(ctypes.byref(header), data), "capset")


def prctl(option: int, arg2: int, arg3: int) -> int:
    return _check(_c_library().prctl(option, arg2, arg3, 0, 0), f"prctl({option}, {arg2}, {arg3})")

