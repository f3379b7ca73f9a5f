"""Capture files a service opens for a client of another user: only those
that user could open, judged on the file actually opened.

The service is root without CAP_DAC_OVERRIDE: root's own files stay open to
it. So it opens the path first (never blocking on a FIFO), then asks of what
it holds, not of the name, whether that user may read it: a regular file
the user may read by its mode bits, every directory above it (as the kernel
resolved it, symbolic links followed) one the user may search. The open
file, not the path, goes to the session, so nothing can be swapped in
between.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from divertgui.service.commands import CommandError


def _allowed(info: os.stat_result, uid: int, groups: set[int], owner_bit: int, group_bit: int,
             other_bit: int) -> bool:
    if info.st_uid == uid:
        return bool(info.st_mode & owner_bit)
    if info.st_gid in groups:
        return bool(info.st_mode & group_bit)
    return bool(info.st_mode & other_bit)


def _refuse_unsearchable(real: str, uid: int, groups: set[int], name: str, path: str) -> None:
    directory = os.path.dirname(real)
    while True:
        info = os.stat(directory)
        if not _allowed(info, uid, groups, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH):
            raise CommandError(f"{name}: {path[:200]} is in a directory you may not enter")
        if directory == "/":
            return
        directory = os.path.dirname(directory)


def open_for_peer(path: str, uid: int, groups: set[int], name: str) -> BinaryIO:
    """`path` open for reading when the user `uid` (in `groups`) may read it; CommandError saying why not."""
    if not os.path.isabs(path):
        raise CommandError(f"{name} must be an absolute path, not {path[:200]!r}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except PermissionError as exc:
        raise CommandError(f"{name}: cannot read {path[:200]}: {exc.strerror}; the service reads a client's "
                           f"files with no right to override their permissions, so the file and its "
                           f"directories must be readable by everyone (chmod o+r, o+x)") from None
    except OSError as exc:
        raise CommandError(f"{name}: cannot read {path[:200]}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CommandError(f"{name}: {path[:200]} is not a regular file")
        if not _allowed(info, uid, groups, stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH):
            raise CommandError(f"{name}: {path[:200]} is not readable by you")
        _refuse_unsearchable(os.readlink(f"/proc/self/fd/{fd}"), uid, groups, name, path)
        os.set_blocking(fd, True)
        return open(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise
