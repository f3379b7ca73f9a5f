"""Where the cgroup v2 hierarchy is mounted, found from the kernel's own mount table.

Unified layouts mount it at /sys/fs/cgroup, hybrid ones next to the v1
controllers (often /sys/fs/cgroup/unified); /proc/self/mountinfo says which.
"""

from __future__ import annotations

import errno
import os

from divertgui.engine.errors import CgroupError


def cgroup2_mount(mountinfo: str = "/proc/self/mountinfo") -> str:
    with open(mountinfo, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            fields = line.split()
            # mountinfo: ... mount point (5th) ... " - " filesystem type, source, options.
            if " - cgroup2 " in line:
                return fields[4].replace("\\040", " ")
    raise CgroupError(errno.ENOENT, "no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup/unified): "
                         "the SOCKET layer attaches its eBPF programs to a cgroup v2")


def open_cgroup(path: str) -> int:
    """A descriptor of the cgroup directory, which bpf() attaches programs to."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise CgroupError(exc.errno, f"cannot open the cgroup {path}: {exc.strerror}") from None


def relative_cgroup(path: str, name: str = "cgroup") -> str:
    """`path` when it names a cgroup under the v2 mount with no way out of it ("" is the mount
    itself); ValueError saying why not. Nothing but plain names between single slashes, so
    neither "..", an absolute path nor a NUL reaches outside the mount."""
    if path and (path.startswith("/") or "\0" in path or any(part in ("", ".", "..") for part in path.split("/"))):
        raise ValueError(f"{name} must be a cgroup path under the cgroup v2 mount, such as "
                         f"system.slice/nginx.service, not {path[:200]!r}")
    return path


def cgroup_directory(path: str) -> str:
    """The directory of the cgroup `path` (relative to the v2 mount); CgroupError when there is none."""
    mount = cgroup2_mount()
    directory = os.path.join(mount, relative_cgroup(path))
    if not os.path.isdir(directory):
        raise CgroupError(errno.ENOENT, f"there is no cgroup {path} under {mount}")
    return directory
