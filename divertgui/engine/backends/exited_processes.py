"""The names of processes that have exited, as Linux reports each exit (taskstats).

A packet's process is named from /proc/PID when its flow is first seen;
the kernel's record of socket creators gives the pid but, to a service
without CAP_PERFMON, not the name. A program that sent and exited at once
(`nc -u -w0`) has no /proc/PID left by then. Linux's taskstats (the
TASKSTATS generic netlink family) sends each registered listener a record of
every task as it exits, with its pid, name (comm) and uid, before its parent
can reap it: by the time /proc/PID is gone, the record waits in this socket.

Registering needs CAP_NET_ADMIN and the initial user and pid namespaces;
the kernel sends the records in the initial network namespace only, so the
listener is opened only by a thread in that namespace (`in_initial_network_namespace`),
once per process (`acquire`): a capture whose thread works in another
namespace uses the one a thread in the initial namespace opened.
Records wait in the socket until `find()` or `drain()` reads them (a burst
beyond the receive buffer loses the newest); the last KEPT are kept.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
import threading

from .netlink import NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR, NLMSGERR_CODE, NLMSGHDR, attribute, iter_attributes, iter_messages

_log = logging.getLogger(__name__)

NETLINK_GENERIC = 16
GENLMSGHDR = struct.Struct("=BBH")                  # cmd, version, reserved
# linux/genetlink.h: the controller that names families.
GENL_ID_CTRL, CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 16, 3, 1, 2
# linux/taskstats.h
TASKSTATS_CMD_GET, TASKSTATS_CMD_ATTR_REGISTER_CPUMASK = 1, 3
TASKSTATS_TYPE_PID, TASKSTATS_TYPE_STATS, TASKSTATS_TYPE_AGGR_PID = 1, 3, 4
# struct taskstats: ac_comm (32 bytes), then ac_uid at 120, unchanged since its version 1.
AC_COMM, AC_COMM_SIZE, AC_UID = 80, 32, 120
U32 = struct.Struct("=I")
KEPT = 4096
RECEIVE_BUFFER = 1 << 20
SO_RCVBUFFORCE = 33                                 # asm-generic/socket.h
# A sysctl Linux registers in the initial network namespace only; /proc/sys/net shows the reading thread's.
_INITIAL_ONLY_SYSCTL = "/proc/sys/net/core/netdev_max_backlog"


def in_initial_network_namespace() -> bool:
    return os.path.exists(_INITIAL_ONLY_SYSCTL)


class ExitedProcesses:
    """pid -> (name, uid) of the processes that exited lately. Raises OSError where the kernel
    refuses the listener (no CAP_NET_ADMIN, another user or pid namespace, no taskstats)."""

    def __init__(self) -> None:
        self._exited: dict[int, tuple[str, int]] = {}
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_GENERIC)
        try:
            self._sock.bind((0, 0))
            try:
                # Beyond the limit an unprivileged socket may ask (CAP_NET_ADMIN allows it).
                self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
            except OSError:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            self._family = self._family_id(b"TASKSTATS")
            with open("/sys/devices/system/cpu/possible") as possible:
                cpus = possible.read().strip()
            self._request(self._family, TASKSTATS_CMD_GET, attribute(TASKSTATS_CMD_ATTR_REGISTER_CPUMASK,
                                                               cpus.encode() + b"\0"))
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise

    def close(self) -> None:
        # Closing the socket ends the registration: the kernel drops a listener it cannot reach.
        self._sock.close()

    def find(self, pid: int) -> tuple[str, int] | None:
        """(name, uid) of a process that has exited, None when no exit of it was seen."""
        self.drain()
        return self._exited.get(pid)

    def drain(self) -> None:
        """Reads the records waiting; called often enough, the socket's buffer never fills."""
        with self._lock:
            while True:
                try:
                    data = self._sock.recv(1 << 16)
                except BlockingIOError:
                    return
                except OSError as exc:
                    if exc.errno == errno.ENOBUFS:        # records lost to a full buffer: read on
                        continue
                    raise
                self._keep(data)

    def _keep(self, data: bytes) -> None:
        for message_type, _flags, _seq, body, end in iter_messages(data, len(data)):
            if message_type != self._family:
                continue
            for kind, value in iter_attributes(data, body + GENLMSGHDR.size, end):
                if kind != TASKSTATS_TYPE_AGGR_PID:
                    continue
                pid, stats = None, None
                for inner, inner_value in iter_attributes(value, 0, len(value)):
                    if inner == TASKSTATS_TYPE_PID:
                        pid = U32.unpack_from(inner_value)[0]
                    elif inner == TASKSTATS_TYPE_STATS and len(inner_value) >= AC_UID + U32.size:
                        stats = inner_value
                if pid is None or stats is None:
                    continue
                name = bytes(stats[AC_COMM:AC_COMM + AC_COMM_SIZE]).split(b"\0", 1)[0]
                if len(self._exited) >= KEPT:
                    del self._exited[next(iter(self._exited))]
                self._exited[pid] = (name.decode(errors="replace"), U32.unpack_from(stats, AC_UID)[0])

    def _family_id(self, name: bytes) -> int:
        reply = self._request(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, attribute(CTRL_ATTR_FAMILY_NAME, name + b"\0"),
                              ack=False)
        for _type, _flags, _seq, body, end in iter_messages(reply, len(reply)):
            for kind, value in iter_attributes(reply, body + GENLMSGHDR.size, end):
                if kind == CTRL_ATTR_FAMILY_ID:
                    return struct.unpack_from("=H", value)[0]
        raise OSError(errno.ENOENT, f"the kernel has no {name.decode()} netlink family")

    def _request(self, family: int, command: int, attrs: bytes, ack: bool = True) -> bytes:
        """The kernel's one answer to a request: its data, or with `ack` its acknowledgement;
        OSError for an error answer."""
        body = GENLMSGHDR.pack(command, 1, 0) + attrs
        flags = NLM_F_REQUEST | NLM_F_ACK if ack else NLM_F_REQUEST
        self._sock.send(NLMSGHDR.pack(NLMSGHDR.size + len(body), family, flags, 1, 0) + body)
        reply = self._sock.recv(1 << 16)
        for kind, _flags, _seq, body_at, _end in iter_messages(reply, len(reply)):
            if kind == NLMSG_ERROR:
                code = -NLMSGERR_CODE.unpack_from(reply, body_at)[0]
                if code:
                    raise OSError(code, f"taskstats: {os.strerror(code)}")
        return reply


_refusal_said = False
_shared: ExitedProcesses | None = None
_users = 0
_shared_lock = threading.Lock()


def acquire() -> ExitedProcesses | None:
    """The process's one listener (every listener gets every exit, so one serves all), opened by
    the first caller; None where it cannot listen, said once in the log: programs that exit
    before they are named then go unnamed. Each acquire() is paired with a release()."""
    global _refusal_said, _shared, _users
    with _shared_lock:
        if _shared is None:
            try:
                if not in_initial_network_namespace():
                    raise OSError("this thread is not in the initial network namespace, the only one Linux "
                                  "reports exits to")
                _shared = ExitedProcesses()
            except OSError as exc:
                if not _refusal_said:
                    _refusal_said = True
                    _log.warning("programs that exit before they are named go unnamed: the kernel's "
                                 "reports of exits (taskstats) are unavailable: %s", exc)
                return None
        _users += 1
        return _shared


def release() -> None:
    """Ends one acquire(); the last closes the listener."""
    global _shared, _users
    with _shared_lock:
        _users -= 1
        if _users == 0 and _shared is not None:
            _shared.close()
            _shared = None
