"""Where the cgroup v2 hierarchy is, read from a mount table; its absence said plainly."""

import pytest

from divertgui.engine.backends.cgroups import cgroup2_mount
from divertgui.engine.errors import CgroupError

HYBRID = ("25 30 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
          "26 25 0:23 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
          "27 25 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n")


def test_the_v2_mount_is_found_beside_the_v1_controllers(tmp_path):
    table = tmp_path / "mountinfo"
    table.write_text(HYBRID)
    assert cgroup2_mount(str(table)) == "/sys/fs/cgroup/unified"


def test_a_table_without_cgroup2_says_what_is_missing_and_how_to_mount_it(tmp_path):
    table = tmp_path / "mountinfo"
    table.write_text(HYBRID.replace("cgroup2 cgroup2", "tmpfs tmpfs"))
    with pytest.raises(CgroupError) as missing:
        cgroup2_mount(str(table))
    assert str(missing.value).startswith("no cgroup v2 hierarchy is mounted (mount -t cgroup2 "), str(missing.value)
