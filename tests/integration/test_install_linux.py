"""install-linux.sh then uninstall-linux.sh, in a scratch root, leaves the tree
exactly as it was (the group file too); only the capture program carries the
capabilities to divert, and only the group divertgui may run it."""

import hashlib
import os
import pathlib
import shutil
import stat
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
INSTALL = ROOT / "packaging" / "install-linux.sh"
UNINSTALL = ROOT / "packaging" / "uninstall-linux.sh"
CAPABILITIES = "cap_net_admin,cap_net_raw=ep"
# What the shadow tools leave beside the group file: backups and their lock.
TOOL_BACKUPS = {"etc/group-", "etc/gshadow-", "etc/.pwd.lock"}

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux installer")


def snapshot(root: pathlib.Path) -> dict[str, tuple]:
    """Every path under root: its kind, mode, and contents or link target."""
    tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = pathlib.Path(dirpath, name)
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                entry = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                entry = ("dir", stat.S_IMODE(info.st_mode))
            else:
                entry = ("file", stat.S_IMODE(info.st_mode), hashlib.sha256(path.read_bytes()).hexdigest())
            relative = str(path.relative_to(root))
            if relative not in TOOL_BACKUPS:
                tree[relative] = entry
    return tree


@pytest.fixture
def fake_bundle(tmp_path) -> pathlib.Path:
    """The shape of dist/divertgui: two real executables and an _internal/ tree."""
    bundle = tmp_path / "bundle" / "divertgui"
    (bundle / "_internal" / "resources").mkdir(parents=True)
    for program in ("divertgui", "divert"):
        shutil.copy2(shutil.which("true"), bundle / program)
    (bundle / "_internal" / "resources" / "marker").write_text("bundled resource\n")
    return bundle


@pytest.fixture
def scratch_root(tmp_path) -> pathlib.Path:
    """A root that already holds things the installer must leave alone."""
    root = tmp_path / "root"
    for directory in ("opt/other", "usr/bin", "usr/share/applications", "usr/share/icons/hicolor/48x48/apps"):
        (root / directory).mkdir(parents=True)
    (root / "opt/other/keep").write_text("another program\n")
    (root / "usr/bin/tool").write_text("#!/bin/sh\n")
    (root / "usr/share/applications/other.desktop").write_text("[Desktop Entry]\nName=Other\n")
    (root / "usr/share/icons/hicolor/48x48/apps/other.png").write_bytes(b"\x89PNG other")
    return root


def sh(*args, check=True) -> subprocess.CompletedProcess:
    process = subprocess.run(["sh", *map(str, args)], capture_output=True, text=True, timeout=60)
    if check:
        assert process.returncode == 0, process.stdout + process.stderr
    return process


def test_install_then_uninstall_leaves_the_tree_exactly_as_before(fake_bundle, scratch_root):
    before = snapshot(scratch_root)
    sh(INSTALL, "--bundle", fake_bundle, "--root", scratch_root, "--no-capabilities")
    installed = snapshot(scratch_root)

    opt = scratch_root / "opt" / "divertgui"
    assert (opt / "_internal" / "resources" / "marker").read_text() == "bundled resource\n"
    assert os.readlink(scratch_root / "usr/bin/divertgui") == "/opt/divertgui/divertgui"
    assert os.readlink(scratch_root / "usr/bin/divert") == "/opt/divertgui/divert"
    entry = (scratch_root / "usr/share/applications/divertgui.desktop").read_text()
    assert "\nExec=/opt/divertgui/divertgui\n" in entry and "\nIcon=divertgui\n" in entry
    for size in (16, 24, 32, 48, 64, 128, 256):
        icon = scratch_root / f"usr/share/icons/hicolor/{size}x{size}/apps/divertgui.png"
        assert icon.read_bytes() == (ROOT / f"resources/icons/divertgui-{size}.png").read_bytes()
    assert (scratch_root / "usr/share/icons/hicolor/scalable/apps/divertgui.svg").is_file()
    added = set(installed) - set(before)
    assert all(path.startswith(("opt/divertgui", "usr/")) for path in added), sorted(added)
    assert {path: installed[path] for path in before} == before

    sh(UNINSTALL, "--root", scratch_root)
    assert snapshot(scratch_root) == before


def test_install_into_an_empty_root_and_back_leaves_it_empty(fake_bundle, tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    sh(INSTALL, "--bundle", fake_bundle, "--root", root, "--prefix", "/usr/local", "--no-capabilities")
    assert (root / "usr/local/share/applications/divertgui.desktop").is_file()
    sh(UNINSTALL, "--root", root)
    assert snapshot(root) == {}


def test_a_file_added_under_a_created_directory_is_kept(fake_bundle, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    sh(INSTALL, "--bundle", fake_bundle, "--root", root, "--no-capabilities")
    (root / "usr/share/icons/hicolor/64x64/apps/someone-else.png").write_bytes(b"not ours")
    sh(UNINSTALL, "--root", root)
    left = snapshot(root)
    assert sorted(left) == ["usr", "usr/share", "usr/share/icons", "usr/share/icons/hicolor",
                            "usr/share/icons/hicolor/64x64", "usr/share/icons/hicolor/64x64/apps",
                            "usr/share/icons/hicolor/64x64/apps/someone-else.png"]


def test_errors_say_what_is_wrong(fake_bundle, scratch_root, tmp_path):
    missing = sh(INSTALL, "--bundle", tmp_path / "nowhere", "--root", scratch_root, check=False)
    assert missing.returncode != 0 and "build.sh" in missing.stderr
    not_installed = sh(UNINSTALL, "--root", scratch_root, check=False)
    assert not_installed.returncode != 0 and "not installed" in not_installed.stderr
    sh(INSTALL, "--bundle", fake_bundle, "--root", scratch_root, "--no-capabilities")
    twice = sh(INSTALL, "--bundle", fake_bundle, "--root", scratch_root, "--no-capabilities", check=False)
    assert twice.returncode != 0 and "uninstall-linux.sh" in twice.stderr
    sh(UNINSTALL, "--root", scratch_root)


def _capabilities_storable(directory: pathlib.Path) -> str | None:
    """None when file capabilities can be stored here; otherwise why not."""
    probe = directory / "capability-probe"
    shutil.copy2(shutil.which("true"), probe)
    try:
        result = subprocess.run(["setcap", CAPABILITIES.replace("=", "+"), str(probe)], capture_output=True, text=True)
    finally:
        probe.unlink()
    if result.returncode != 0:
        return f"the filesystem of {directory} stores no file capabilities (extended attributes): {result.stderr.strip()}"
    return None


def test_only_the_capture_program_has_the_capabilities_and_only_the_group_runs_it(fake_bundle, scratch_root):
    missing = None
    if os.geteuid() != 0:
        missing = "setting file capabilities needs root (CAP_SETFCAP)"
    elif shutil.which("setcap") is None or shutil.which("getcap") is None:
        missing = "setcap/getcap are not installed (Debian package libcap2-bin)"
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"missing prerequisite in CI: {missing}")
        pytest.skip(missing)
    unsupported = _capabilities_storable(scratch_root)
    if unsupported:
        pytest.skip(unsupported)
    (scratch_root / "etc").mkdir()
    (scratch_root / "etc/group").write_text("root:x:0:\nusers:x:100:\n")
    (scratch_root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nalice:x:1000:100::/home/alice:/bin/sh\n")
    before = snapshot(scratch_root)
    done = subprocess.run(["sh", str(INSTALL), "--bundle", str(fake_bundle), "--root", str(scratch_root)],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ, SUDO_USER="alice"))
    assert done.returncode == 0, done.stderr
    assert "added alice to the group divertgui" in done.stdout and "new login" in done.stdout
    group = next(line for line in (scratch_root / "etc/group").read_text().splitlines() if line.startswith("divertgui:"))
    name, _, gid, members = group.split(":")
    assert members == "alice"
    capture = scratch_root / "opt/divertgui/divert"
    info = capture.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, int(gid), 0o750)
    shown = subprocess.run(["getcap", str(capture)], capture_output=True, text=True, check=True).stdout
    assert shown.split()[-1] == CAPABILITIES, shown
    window = subprocess.run(["getcap", str(scratch_root / "opt/divertgui/divertgui")],
                            capture_output=True, text=True, check=True).stdout
    assert window == "", window
    assert (scratch_root / "usr/lib/tmpfiles.d/divertgui.conf").read_text() == ("d /run/divertgui 0755 root root -\n"
                                                                          "d /run/divertgui/handles 1775 root divertgui -\n"
                                                                          "f /run/divertgui/rules.lock 0640 root divertgui -\n")
    sh(UNINSTALL, "--root", scratch_root)
    assert snapshot(scratch_root) == before


def test_a_group_that_was_there_stays_and_loses_only_the_member_the_installer_added(fake_bundle, scratch_root):
    if os.geteuid() != 0:
        pytest.skip("changing a group file and file owners needs root")
    (scratch_root / "etc").mkdir()
    (scratch_root / "etc/group").write_text("root:x:0:\ndivertgui:x:990:bob\n")
    (scratch_root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nalice:x:1000:100::/home/alice:/bin/sh\n"
                                             "bob:x:1001:100::/home/bob:/bin/sh\n")
    before = snapshot(scratch_root)
    done = subprocess.run(["sh", str(INSTALL), "--bundle", str(fake_bundle), "--root", str(scratch_root),
                           "--no-capabilities"], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, SUDO_USER="alice"))
    assert done.returncode == 0, done.stderr
    assert "divertgui:x:990:bob,alice" in (scratch_root / "etc/group").read_text()
    assert (scratch_root / "opt/divertgui/divert").stat().st_gid == 990
    sh(UNINSTALL, "--root", scratch_root)
    assert snapshot(scratch_root) == before


def test_only_members_of_the_group_can_run_the_installed_capture_program(fake_bundle):
    """Attacks (a) and (b) start by running the capture program: a user outside the group cannot."""
    if os.geteuid() != 0:
        pytest.skip("running a program as another user needs root")
    import tempfile
    root = pathlib.Path(tempfile.mkdtemp(prefix="divertgui-install-"))     # reachable by every user
    try:
        root.chmod(0o755)
        (root / "etc").mkdir()
        (root / "etc/group").write_text("root:x:0:\n")
        sh(INSTALL, "--bundle", fake_bundle, "--root", root, "--no-capabilities")
        gid = int(next(line for line in (root / "etc/group").read_text().splitlines()
                       if line.startswith("divertgui:")).split(":")[2])
        capture = root / "opt/divertgui/divert"

        def run_as(*groups: int) -> subprocess.CompletedProcess:
            def become_nobody():
                # Leaving uid 0 without keeping capabilities drops every one of them.
                os.setgroups(list(groups))
                os.setresgid(65534, 65534, 65534)
                os.setresuid(65534, 65534, 65534)
            return subprocess.run([str(capture)], capture_output=True, text=True, timeout=30,
                                  preexec_fn=become_nobody)

        with pytest.raises(PermissionError):
            run_as()
        member = run_as(gid)
        assert member.returncode == 0, member.stderr
        sh(UNINSTALL, "--root", root)
    finally:
        shutil.rmtree(root)


def test_the_installed_tree_is_roots_whoever_built_the_bundle(fake_bundle, scratch_root):
    """A bundle built by a user, installed by root: nothing under /opt/divertgui stays that user's
    or writable by anyone but root, or the builder could change code that runs with the capture
    program's capabilities (a library the bundle loads) or in every user's window."""
    if os.geteuid() != 0:
        pytest.skip("changing file owners needs root")
    builder = 1000
    (fake_bundle / "_internal" / "lib-dynload").mkdir()
    (fake_bundle / "_internal" / "lib-dynload" / "_json.so").write_bytes(b"\x7fELF a module the bundle loads")
    for dirpath, dirnames, filenames in os.walk(fake_bundle):
        for name in [".", *dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            os.chown(path, builder, builder)
            os.chmod(path, os.stat(path).st_mode | stat.S_IWGRP)
    (scratch_root / "etc").mkdir()
    (scratch_root / "etc/group").write_text("root:x:0:\n")
    sh(INSTALL, "--bundle", fake_bundle, "--root", scratch_root, "--no-capabilities")
    opt = scratch_root / "opt/divertgui"
    for dirpath, dirnames, filenames in os.walk(opt):
        for name in [".", *dirnames, *filenames]:
            info = os.lstat(os.path.join(dirpath, name))
            assert info.st_uid == 0, f"{os.path.join(dirpath, name)} is uid {info.st_uid}'s"
            assert not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH), f"{os.path.join(dirpath, name)} is writable"
    sh(UNINSTALL, "--root", scratch_root)
