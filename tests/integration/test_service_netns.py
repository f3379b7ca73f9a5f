"""The capture service with real traffic in a namespace: a root service on a
Unix socket serves an unprivileged user and refuses another; a window killed
while it holds packets loses none of them and leaves no rule behind."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time

import pytest

from divertgui.engine.address import Address
from divertgui.engine.pcapng import write_capture
from tests.integration.conftest import our_chains, receive_expected, wait_until

REPO = pathlib.Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.netns

SCENARIOS = [sys.executable, "-m", "tests.integration.service_scenarios"]


def report_of(process: subprocess.Popen, timeout: float = 60) -> dict:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return json.loads(out.splitlines()[-1])


@pytest.fixture
def socket_directory():
    """A directory only root may write to, which every user may pass through."""
    directory = tempfile.mkdtemp(prefix="divertgui-test-", dir="/run")
    os.chmod(directory, 0o755)
    yield directory
    for name in os.listdir(directory):
        os.unlink(os.path.join(directory, name))
    os.rmdir(directory)


@pytest.fixture
def listening(netns, socket_directory):
    path = os.path.join(socket_directory, "divert.sock")
    service = netns.popen([sys.executable, "-m", "divertgui.cli", "serve", "--listen", path, "--allow-uid", "65534"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert wait_until(lambda: os.path.exists(path) or service.poll() is not None, 20), "no socket"
    assert service.poll() is None, service.stderr.read()
    yield path, service
    service.send_signal(signal.SIGTERM)
    service.wait(10)


def test_an_unprivileged_user_captures_holds_edits_and_forwards_through_a_root_service(netns, listening):
    path, service = listening
    client = netns.popen([*SCENARIOS, "capture", f"unix:{path}", "65534", "40311"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    report = report_of(client)
    assert report["uid"] == 65534 and report["effective_capabilities"] == 0
    assert report["hello"]["live"] == ""
    assert report["state"]["running"] and report["state"]["source"] == "live", report
    assert report["held_payload"] == "original payload!"
    assert report["received"] == "EDITED payload!!!"
    assert report["verdict"] == "MODIFIED"
    assert report["udp_received"] == ["datagram 0", "datagram 1", "datagram 2"]
    assert report["udp_rows"] == 3
    assert report["errors"] == []
    assert wait_until(lambda: not our_chains(netns), 5), our_chains(netns)


def test_a_user_not_allowed_is_refused_with_a_clear_message(netns, listening):
    path, service = listening
    client = netns.popen([*SCENARIOS, "refused", f"unix:{path}", "65533"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    report = report_of(client)
    assert report["hello"] is None
    assert report["errors"][0] == (
        "uid 65533 may not use this divert service: it serves uid 0 (root), uid 65534 (nobody); "
        "ask its administrator to add you (divert serve --allow-uid or --allow-group)")
    service.send_signal(signal.SIGTERM)
    _, log = service.communicate(timeout=10)
    assert "refused process" in log and "uid 65533" in log


def one_packet_capture(path: pathlib.Path) -> pathlib.Path:
    payload = b"only root may read this"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), 1, 0, 64, 17, 0,
                     bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
    udp = struct.pack("!HHHH", 1234, 5678, 8 + len(payload), 0)
    write_capture(path, [(ip + udp + payload, Address(outbound=True, loopback=True), time.time_ns())])
    path.chmod(0o644)
    return path


@pytest.fixture
def open_directory():
    """A directory of uid 65534's that every user may enter."""
    directory = pathlib.Path(tempfile.mkdtemp(prefix="divertgui-open-"))
    os.chown(directory, 65534, 65534)
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def opened_as_nobody(netns, socket_path: str, capture: pathlib.Path, how: str = "open") -> dict:
    client = netns.popen([*SCENARIOS, how, f"unix:{socket_path}", "65534", str(capture)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return report_of(client)


@pytest.mark.parametrize("how", ["open", "replay"])
def test_a_client_reads_its_own_private_file_through_a_root_service_and_no_other_users(netns, listening,
                                                                                       open_directory, how):
    """The client opens the file itself and hands it over with the command: the service reads its
    0600 file, which root without the right to override permissions could not open; another user's
    0600 file, which the client cannot open, goes by its path and stays refused."""
    path, _ = listening
    own = one_packet_capture(open_directory / "own.pcapng")
    os.chown(own, 65534, 65534)
    own.chmod(0o600)
    report = opened_as_nobody(netns, path, own, how)
    assert report["errors"] == [] and report["rows"] == 1, report
    if how == "open":
        assert report["opened"][-1] == f"opened {own}: 1 packets"
    others = one_packet_capture(open_directory / "others.pcapng")
    os.chown(others, 65533, 65533)
    others.chmod(0o600)
    report = opened_as_nobody(netns, path, others, how)
    assert report["rows"] == 0
    assert len(report["errors"]) == 1 and f"cannot read {others}: Permission denied" in report["errors"][0]


def test_a_client_opens_only_capture_files_its_user_may_read(netns, listening, open_directory, tmp_path):
    path, _ = listening
    hidden = one_packet_capture(tmp_path / "private.pcapng")       # world-readable, in root's 0700 directory
    assert stat.S_IMODE(os.stat(tmp_path.parent).st_mode) & 0o001 == 0
    link = open_directory / "link.pcapng"
    link.symlink_to(hidden)
    shared = one_packet_capture(open_directory / "shared.pcapng")

    for refused in (hidden, link):
        report = opened_as_nobody(netns, path, refused)
        assert report["opened"] == [] and report["rows"] == 0
        assert len(report["errors"]) == 1 and "is in a directory you may not enter" in report["errors"][0]
    report = opened_as_nobody(netns, path, shared)
    assert report["errors"] == [] and report["rows"] == 1
    assert report["opened"][-1] == f"opened {shared}: 1 packets"


@pytest.mark.parametrize("workers", [1, 2])
def test_killing_the_window_while_it_holds_packets_forwards_them_and_removes_the_rules(netns, workers):
    port, count = 40312, 6
    with netns.entered():
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.bind(("0.0.0.0", port))
    window = netns.popen([*SCENARIOS, "hold", "local", str(port), str(count), str(workers)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = window.stdout.readline()
    assert line, window.stderr.read()
    report = json.loads(line)
    assert report["held"] == count and report["state"]["source"] == "live", report
    assert our_chains(netns)
    service = report["service_pid"]
    window.kill()
    killed = time.monotonic()
    gone = wait_until(lambda: not os.path.exists(f"/proc/{service}") or _zombie(service), 10, 0.005)
    took = time.monotonic() - killed
    print(f"the service ended {took:.3f} s after the window was killed")
    assert gone, f"service {service} still running"
    got = receive_expected(receiver, count)
    assert sorted(got) == [b"held %d" % i for i in range(count)]
    assert not our_chains(netns)


def test_a_capture_over_two_workers_keeps_every_flow_whole_and_routes_held_packets_to_their_worker(netns):
    port = 40313
    window = netns.popen([*SCENARIOS, "workers", "local", str(port)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    report = report_of(window, timeout=180)
    assert report["state"]["running"] and report["state"]["source"] == "live", report
    assert report["worker_processes"] == 2
    # Every datagram and segment captured once, each flow's in the order it was sent.
    sent = [f"flow {k} datagram {i}" for i in range(10) for k in range(12)]
    assert report["udp_received"] == sorted(sent)
    assert sorted(report["udp_rows"]) == sorted(sent)
    for k in range(12):
        assert [row for row in report["udp_rows"] if row.startswith(f"flow {k} ")] == \
            [f"flow {k} datagram {i}" for i in range(10)]
    assert len(report["tcp_rows"]) == 4
    for segments in report["tcp_rows"]:
        sequence = [seq for seq, _ in segments]
        assert sequence == sorted(set(sequence))
        text = "".join(payload for _, payload in segments)
        k = int(text.split()[1])
        assert text == report["tcp_received"][str(k)] == "".join(f"connection {k} message {i};" for i in range(5))
    # Held in either worker, edited, forwarded: the receiver gets the edited bytes.
    assert report["edited_received"] == sorted(f"EDIT {k}" for k in range(12))
    # A worker killed: the packets it held are lost and counted, the other's still forward.
    assert 0 < report["lost"] < 12 and report["lost"] + report["kept"] == 12, report
    assert report["after_kill_received"] == report["kept_sent"]
    assert report["stats"]["held_lost_with_worker"] == report["lost"]
    assert report["stats"]["lost_with_worker"] >= report["lost"]
    assert report["stats"]["workers"] == 2 and report["stats"]["workers_restarted"] == 1
    assert report["held_after_restart"] == 12
    assert report["after_restart_received"] == sorted(f"third {k}" for k in range(12))
    assert report["held_at_stop"] == 12 and report["received_at_stop"] == sorted(f"fourth {k}" for k in range(12))
    assert report["errors"] == []
    assert wait_until(lambda: not our_chains(netns), 10), our_chains(netns)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


# The window, its QApplication made as root, then run as uid 65534 with no capabilities.
LIVE_SELF_TEST_AS_NOBODY = """
import os, sys
from PySide6.QtWidgets import QApplication
import divertgui.app
app = QApplication(["divertgui"])
os.setgroups([])
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)
sys.exit(divertgui.app.main(["--self-test", "--live", "--connect", sys.argv[1]]))
"""


def open_the_way(paths, staging: str) -> str:
    """Shell, for a mount namespace of the window's own, that lets every user through each
    directory on the way to `paths` that only its owner may enter (a checkout or an
    interpreter under a 0700 directory, as root's home is): an enterable tmpfs over that
    directory, with the entries on the way bound back into it. Nothing outside changes."""
    closed: dict[pathlib.Path, set[str]] = {}
    for path in paths:
        path = pathlib.Path(path).resolve()
        for directory in reversed(path.parents):
            if not os.stat(directory).st_mode & 0o001:
                closed.setdefault(directory, set()).add(path.relative_to(directory).parts[0])
    steps, rebinds = ["mount --make-rprivate /"], []
    for directory in sorted(closed, key=lambda d: len(d.parts)):
        rebinds.append(f"mount -t tmpfs -o mode=755 way {directory}")
        for entry in sorted(closed[directory]):
            kept = os.path.join(staging, str(len(steps)))
            steps += [f"mkdir {kept}", f"mount --bind {directory / entry} {kept}"]
            rebinds += [f"mkdir {directory / entry}", f"mount --bind {kept} {directory / entry}"]
    return " && ".join(steps + rebinds)


@pytest.fixture
def nobodys_directory():
    """A directory of uid 65534's own, which it can reach (pytest's are under root's 0700 one)."""
    directory = tempfile.mkdtemp(prefix="divertgui-nobody-")
    os.chown(directory, 65534, 65534)
    yield directory
    shutil.rmtree(directory)


def test_the_live_self_test_passes_in_an_unprivileged_window_through_a_root_service(netns, listening,
                                                                                    nobodys_directory,
                                                                                    tmp_path):
    path, service = listening
    config = nobodys_directory
    way = open_the_way([REPO, sys.prefix, sys.base_prefix], str(tmp_path))
    window = netns.popen(["unshare", "--mount", "sh", "-c", f'{way} && exec "$@"', "sh",
                          sys.executable, "-c", LIVE_SELF_TEST_AS_NOBODY, f"unix:{path}"],
                         env={"QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": config,
                              "XDG_RUNTIME_DIR": config},
                         cwd=config, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = window.communicate(timeout=120)
    assert window.returncode == 0, out + err
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("live self-test passed: ") and summary.endswith("capabilities: none"), summary
    # The datagrams and segments it sent, counted from what the window received.
    assert int(summary.split()[3]) >= 10, summary
