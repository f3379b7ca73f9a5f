"""A cgroup v2 of the test's own for a live capture's record of socket creators, and a check
that no test attaches divertgui's eBPF programs at the machine's root cgroup.

A live capture without a cgroup attaches its cgroup/sock_create program at the root, which
reaches every process of the machine; the tests pass `capture_cgroup` instead. The check lists
the root's programs named divert_* when the session starts and when it ends: a program there at
the end that was not there at the start is one a test left, or a capture still running.
"""

from __future__ import annotations

import itertools
import os
import time

import pytest

_names = itertools.count()
SETTLE_SECONDS = 5      # programs of captures still closing when the session ends


def _root_programs() -> set[tuple[int, str]] | None:
    """(id, name) of the divert_* programs attached to the root cgroup v2; None without one."""
    from divertgui.engine.backends import bpf_syscall
    from divertgui.engine.backends.cgroups import CgroupError, cgroup2_mount, open_cgroup
    from divertgui.engine.backends.socket_layer import HOOKS
    from divertgui.engine.errors import BpfError
    try:
        root_fd = open_cgroup(cgroup2_mount())
    except (CgroupError, OSError):
        return None
    found = set()
    try:
        for attach_type in HOOKS:
            try:
                ids = bpf_syscall.query_cgroup(root_fd, attach_type)
            except BpfError:
                return None                     # not root, or no bpf(): nothing to watch
            for prog_id in ids:
                try:
                    fd = bpf_syscall.prog_fd(prog_id)
                except BpfError:
                    continue                    # detached meanwhile
                try:
                    name = bpf_syscall.prog_name(fd)
                finally:
                    os.close(fd)
                if name.startswith("divert_"):
                    found.add((prog_id, name))
    finally:
        os.close(root_fd)
    return found


@pytest.fixture(scope="session", autouse=True)
def root_cgroup_untouched():
    before = _root_programs()
    yield
    if before is None:
        return
    end = time.monotonic() + SETTLE_SECONDS
    while (left := _root_programs() - before) and time.monotonic() < end:
        time.sleep(0.2)
    assert not left, (f"eBPF programs left attached at the root cgroup v2 by this session: {sorted(left)}; "
                      f"a live capture in a test must pass the capture_cgroup fixture's cgroup")


@pytest.fixture
def capture_cgroup() -> str:
    """A new cgroup v2 (its path under the mount) for a live capture's `cgroup`, removed afterwards."""
    from divertgui.engine.backends.cgroups import CgroupError, cgroup2_mount
    try:
        mount = cgroup2_mount()
    except CgroupError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    name = f"divertgui-capture-{os.getpid()}-{next(_names)}"
    os.mkdir(os.path.join(mount, name))
    yield name
    os.rmdir(os.path.join(mount, name))
