"""Who may use a listening service: its own user, the uids and the members of
the groups named on its command line. The kernel says who is at the other
end of a Unix socket (SO_PEERCRED); nothing the client sends is believed."""

from __future__ import annotations

import grp
import os
import pwd
import socket
import struct

_UCRED = struct.Struct("3i")


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


def groups_of(uid: int, gid: int) -> set[int]:
    """The groups of `uid` as the group database says (primary `gid` included)."""
    try:
        return set(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)) | {gid}
    except KeyError:
        return {gid}


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

    def refusal(self, uid: int, gid: int) -> str | None:
        """Why this peer may not use the service, in one sentence; None when it may."""
        if uid in self.uids or groups_of(uid, gid) & set(self.groups):
            return None
        return (f"{who(uid)} may not use this divert service: it serves "
                f"{self.describe()}; ask its administrator to add you (divert serve --allow-uid or "
                f"--allow-group)")
