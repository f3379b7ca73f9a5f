"""The process that created each socket, remembered by the kernel as the socket is made.

A live capture attributes a packet to the process owning its socket. The
open files of processes (/proc/PID/fd) say which that is, but the kernel
refuses them to a reader lacking a capability the process holds (the
capture service keeps only CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF, so every
program run from a root shell is hidden from it). The SOCKET layer's
cgroup/sock_create program (socket_programs.sock_create) needs none of that:
attached to a cgroup v2 it writes, for each socket a process of that cgroup
creates, the socket's cookie -> the creating process's id (and its name,
where this process may read names) into a map that `creator()` reads by the
cookie socket diagnostics report. Sockets created before the program was
attached are not in it.

The program is attached through a bpf link: it leaves the kernel when
`close()` closes the link or this process dies.
"""

from __future__ import annotations

import logging
import os
import struct

from . import bpf_syscall as sys_bpf
from . import socket_programs as programs
from .cgroups import cgroup2_mount, cgroup_directory, open_cgroup

_log = logging.getLogger(__name__)
_refusal_said = False

ENTRIES = 1 << 16           # sockets remembered, the least recently created or read forgotten beyond
PID = struct.Struct("<Q")
COOKIE = struct.Struct("<Q")


class SocketCreators:
    """SocketCreators(cgroup=None): the creating process of the sockets made in `cgroup` (a cgroup v2
    directory; None: the hierarchy's root, every process). Raises BpfError, CgroupError or
    OSError where the kernel refuses the map, the program or the attachment."""

    def __init__(self, cgroup: str | None = None) -> None:
        self._fds: list[int] = []
        try:
            self._owners = self._keep(sys_bpf.create_lru_hash(ENTRIES, programs.OWNER_SIZE, "divert_creators"))
            program = programs.sock_create(programs.Maps(events=-1, owners=self._owners, listeners=-1, locals=-1))
            prog_fd = self._keep(sys_bpf.load_program(program.prog_type, program.attach_type, program.code,
                                                      program.name))
            cgroup_fd = open_cgroup(cgroup or cgroup2_mount())
            try:
                self._keep(sys_bpf.attach_cgroup(prog_fd, cgroup_fd, program.attach_type))
            finally:
                os.close(cgroup_fd)
        except BaseException:
            self.close()
            raise

    def _keep(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def creator(self, cookie: int) -> tuple[int, str] | None:
        """(pid, name) of the process that created the socket of this cookie, the name "" where the
        program could not read it; None for a socket it did not see created."""
        value = sys_bpf.lookup_elem(self._owners, COOKIE.pack(cookie), programs.OWNER_SIZE)
        if value is None:
            return None
        name = value[PID.size:].split(b"\0", 1)[0].decode(errors="replace")
        return PID.unpack_from(value)[0], name

    def close(self) -> None:
        for fd in reversed(self._fds):
            os.close(fd)
        self._fds = []


def in_initial_pid_namespace(status: str = "/proc/self/status") -> bool:
    """Whether this process's pids are the machine's: the program records the pid the initial
    namespace knows, which a process in a nested one (NSpid lists each level) does not."""
    with open(status) as lines:
        for line in lines:
            if line.startswith("NSpid:"):
                return len(line.split()) == 2
    return True


def for_capture(cgroup: str = "") -> tuple[SocketCreators | None, str]:
    """(the creators of the sockets a live capture sees, ""): those of `cgroup` (a path under the
    cgroup v2 mount; "": every process). Where the kernel refuses, (None, what the capture lacks
    and why), said once in the log too: packets are then attributed through /proc alone."""
    global _refusal_said
    try:
        if not in_initial_pid_namespace():
            raise OSError("this process runs in a nested pid namespace, whose pids the kernel's record lacks")
        return SocketCreators(cgroup_directory(cgroup)), ""
    except (OSError, ValueError) as exc:
        why_not = (f"Packets of programs whose open files the capture service may not read show no process: "
                   f"the record of socket creators is unavailable: {exc}")
        if not _refusal_said:
            _refusal_said = True
            _log.warning("%s", why_not)
        return None, why_not
