"""Who may use a listening service: its own user, the uids and the members of
the groups named on its command line. The kernel says who is at the other
end of a Unix socket (SO_PEERCRED) and in which groups its process was
(SO_PEERGROUPS); nothing the client sends is believed."""

from __future__ import annotations

import ctypes
import errno
import grp
import os
import pwd
import socket
import struct

_UCRED = struct.Struct("3i")
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)     # Linux 4.13
MAX_GROUPS = 65536                                       # NGROUPS_MAX


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process that connected."""
    return _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))


def user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def who(uid: int) -> str:
    """A user as a sentence names it: `alice (uid 1000)`, or `uid 1234` when it has no name."""
    name = user_name(uid)
    return f"{name} (uid {uid})" if name else f"uid {uid}"


def peer_groups(sock: socket.socket, gid: int) -> set[int]:
    """The groups of the process that connected, as the kernel had them when it connected
    (SO_PEERGROUPS): its primary group `gid` and its supplementary groups. Not the group
    database, which still lists a user in a group its process has dropped (setgroups)."""
    libc = ctypes.CDLL(None, use_errno=True)
    count = 64
    while True:
        groups = (ctypes.c_uint32 * count)()
        size = ctypes.c_uint32(ctypes.sizeof(groups))
        if libc.getsockopt(sock.fileno(), socket.SOL_SOCKET, SO_PEERGROUPS, groups, ctypes.byref(size)) == 0:
            return {gid, *groups[:size.value // ctypes.sizeof(ctypes.c_uint32)]}
        err = ctypes.get_errno()
        if err != errno.ERANGE or count >= MAX_GROUPS:
            raise OSError(err, f"SO_PEERGROUPS: {os.strerror(err)}")
        # The kernel said how much room the peer's groups need.
        count = min(MAX_GROUPS, max(count * 2, size.value // ctypes.sizeof(ctypes.c_uint32)))


class AccessPolicy:
    def __init__(self, uids=(), groups=()):
        self.uids = {os.geteuid(), *uids}
        self.groups: dict[int, str] = {}
        for name in groups:
            try:
                self.groups[grp.getgrnam(name).gr_gid] = name
            except KeyError:
                raise ValueError(f"--allow-group {name}: no such group") from None

    def describe(self) -> str:
        parts = [f"uid {uid} ({name})" if (name := user_name(uid)) else f"uid {uid}" for uid in sorted(self.uids)]
        parts += [f"group {name}" for name in self.groups.values()]
        return ", ".join(parts)

    @property
    def shared(self) -> bool:
        """Whether the service serves users besides its own."""
        return len(self.uids) > 1 or bool(self.groups)

    def refusal(self, uid: int, groups: set[int]) -> str | None:
        """Why a peer of `uid` in `groups` may not use the service, in one sentence; None when it may."""
        if uid in self.uids or groups & set(self.groups):
            return None
        return (f"{who(uid)} may not use this divert service: it serves "
                f"{self.describe()}; ask its administrator to add you (divert serve --allow-uid or "
                f"--allow-group)")
