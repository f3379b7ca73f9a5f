"""The machine's open divert handles, one file each in a root-owned directory.

Every handle (of any process, at any layer but REFLECT) writes an entry
when it opens and removes it when it closes; the REFLECT layer watches the
directory (inotify) and the entries' processes (pidfd), and `divert list`,
`watch` and `kill` read it. An entry names its process by pid and start
time, so a pid reused by another program does not pass for the handle's.

The directory is /run/divertgui/handles: root's, group divertgui (the
installer's group of capture users) may add entries, nobody else may
write, and the sticky bit keeps each writer to its own files. An entry is
believed only when its file's owner is the process's own user.
"""

from __future__ import annotations

import contextlib
import grp
import itertools
import json
import os
import stat
import time
from typing import NamedTuple

from divertgui.engine import privileges
from divertgui.engine.address import Flag, Layer
from divertgui.engine.errors import RegistryError

from .netfilter_rules import LOCK_DIRECTORY, open_lock_directory, pid_owner

DIRECTORY = os.path.join(LOCK_DIRECTORY, "handles")
GROUP = privileges.CAPTURE_GROUP
_SUFFIX = ".json"
_counter = itertools.count(1)


class Entry(NamedTuple):
    name: str           # the entry's file name
    pid: int
    start: int          # the process's start time (clock ticks after boot, /proc/PID/stat field 22)
    layer: Layer
    priority: int
    flags: int
    filter: str
    opened: int         # CLOCK_MONOTONIC ns when the handle opened

    def describe(self) -> str:
        return f"{self.layer.name} priority {self.priority} flags {Flag(self.flags)!r} filter {self.filter!r}"


def process_start(pid: int) -> int | None:
    """The process's start time, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            text = stat_file.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    return int(text[text.rindex(b")") + 2:].split()[19])


def alive(entry: Entry) -> bool:
    return process_start(entry.pid) == entry.start


def open_directory(create: bool) -> int:
    """The registry directory, checked to be root's and writable only by root and its group."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(DIRECTORY, flags)
    except FileNotFoundError:
        if not create or os.geteuid() != 0:
            raise RegistryError(2, f"the handle registry {DIRECTORY} does not exist: packaging/install-linux.sh "
                                   f"has the system create it at boot, and any divert run as root creates it") from None
        parent = open_lock_directory()
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir("handles", 0o755, dir_fd=parent)
                group = _group_id()
                os.chown("handles", 0, group if group is not None else 0, dir_fd=parent)
                os.chmod("handles", 0o1775 if group is not None else 0o755, dir_fd=parent)
        finally:
            os.close(parent)
        fd = os.open(DIRECTORY, flags)
    info = os.fstat(fd)
    group = _group_id()
    if info.st_uid != 0 or info.st_mode & stat.S_IWOTH or (info.st_mode & stat.S_IWGRP and info.st_gid not in (0, group)):
        os.close(fd)
        raise RegistryError(1, f"the handle registry {DIRECTORY} must belong to root and be writable by no user "
                               f"but root and the group {GROUP} (it is uid {info.st_uid} gid {info.st_gid}, "
                               f"mode {stat.S_IMODE(info.st_mode):04o})")
    return fd


def _group_id() -> int | None:
    try:
        return grp.getgrnam(GROUP).gr_gid
    except KeyError:
        return None


def register(layer: Layer, priority: int, flags: int, filter_text: str, opened: int) -> str:
    """Writes this process's entry for a handle just opened; returns its name.

    The entry appears whole (written aside, then renamed into place), so a
    watcher never reads half of one. Entries of processes that died without
    closing their handles are swept first.
    """
    sweep()
    pid = os.getpid()
    name = f"{pid}-{next(_counter)}-{time.monotonic_ns()}{_SUFFIX}"
    record = {"pid": pid, "start": process_start(pid), "layer": int(layer), "priority": priority,
              "flags": int(flags), "filter": filter_text, "opened": opened}
    fd = open_directory(create=True)
    try:
        temporary = "." + name
        entry = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                        dir_fd=fd)
        with os.fdopen(entry, "w") as out:
            json.dump(record, out)
        os.rename(temporary, name, src_dir_fd=fd, dst_dir_fd=fd)
    except OSError as exc:
        raise RegistryError(exc.errno, f"cannot add the handle to {DIRECTORY}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return name


def unregister(name: str) -> None:
    with contextlib.suppress(OSError):
        fd = open_directory(create=False)
        try:
            os.unlink(name, dir_fd=fd)
        finally:
            os.close(fd)


def read_entry(directory_fd: int, name: str) -> Entry | None:
    """The entry, or None when it is gone, malformed, or not written by its process's user."""
    if not name.endswith(_SUFFIX) or name.startswith("."):
        return None
    try:
        # Members of the capture group may put anything here: a FIFO must not hold the reader.
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC,
                     dir_fd=directory_fd)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        owner = info.st_uid
        with os.fdopen(fd, "rb", closefd=False) as data:
            record = json.loads(data.read(1 << 16))
        entry = Entry(name, int(record["pid"]), int(record["start"]), Layer(int(record["layer"])),
                      int(record["priority"]), int(record["flags"]), str(record["filter"]), int(record["opened"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    finally:
        os.close(fd)
    uid = pid_owner(entry.pid)
    if uid is not None and owner not in (0, uid):
        return None
    return entry


def entries() -> list[Entry]:
    """Every entry, of live processes and dead ones (see `alive`)."""
    try:
        fd = open_directory(create=False)
    except RegistryError:
        return []
    try:
        found = [read_entry(fd, name) for name in sorted(os.listdir(fd))]
    finally:
        os.close(fd)
    return [entry for entry in found if entry is not None]


def sweep() -> list[Entry]:
    """Removes the entries of processes that are gone; returns them."""
    stale = [entry for entry in entries() if not alive(entry)]
    for entry in stale:
        unregister(entry.name)
    return stale
