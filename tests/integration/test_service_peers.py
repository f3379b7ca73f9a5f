"""Who gets a root `--listen` service's client slots: no one allowed user may take them all from the
others, and `--allow-group` admits a process by the groups it has, not by the group database."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys

import pytest

from divertgui.service import framing
from divertgui.service.serve import MAX_CLIENTS_PER_USER
from tests.integration.conftest import run, wait_until
from tests.integration.test_service_netns import socket_directory

pytestmark = pytest.mark.netns
__all__ = ["socket_directory"]


def first_frames_as(path: str, uid: int, groups: list[int], count: int):
    """A child process of `uid` in `groups` (and no other) connects `count` times to `path` and holds
    the connections open; what the service said first on each, and a callable that lets it go."""
    report_r, report_w = os.pipe()
    hold_r, hold_w = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(report_r)
            os.close(hold_w)
            os.setgroups(groups)
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            said, held = [], []
            for _ in range(count):
                client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                client.settimeout(20)
                client.connect(path)
                held.append(client)
                kind, body = next(iter(framing.FrameReader(client.recv, framing.MAX_SERVICE_FRAME)))
                said.append(framing.decode_json(body))
            os.write(report_w, json.dumps(said).encode() + b"\n")
            os.read(hold_r, 1)
        finally:
            os._exit(0)
    os.close(report_w)
    os.close(hold_r)
    with os.fdopen(report_r) as report:
        said = json.loads(report.readline() or "null")

    def release() -> None:
        os.close(hold_w)
        os.waitpid(child, 0)

    return said, release


def start_service(netns, path: str, *allowed: str) -> subprocess.Popen:
    service = netns.popen([sys.executable, "-m", "divertgui.cli", "serve", "--listen", path, *allowed],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert wait_until(lambda: os.path.exists(path) or service.poll() is not None, 20), "no socket"
    assert service.poll() is None, service.stderr.read()
    return service


def stopped(service: subprocess.Popen) -> str:
    service.send_signal(signal.SIGTERM)
    return service.communicate(timeout=20)[1]


def test_one_allowed_user_cannot_take_every_slot_from_the_others(netns, socket_directory):
    path = os.path.join(socket_directory, "divert.sock")
    service = start_service(netns, path, "--allow-uid", "65534", "--allow-uid", "65533")
    releases = []
    try:
        said, release = first_frames_as(path, 65534, [], MAX_CLIENTS_PER_USER + 1)
        releases.append(release)
        assert [message["type"] for message in said] == ["hello"] * MAX_CLIENTS_PER_USER + ["error"], said
        assert said[-1]["message"] == (
            f"nobody (uid 65534) already has {MAX_CLIENTS_PER_USER} connections to this divert service, the most "
            f"one user may have while it serves others; close one of them (a window or another divert client) "
            f"first")
        other, release = first_frames_as(path, 65533, [], 1)
        releases.append(release)
        assert [message["type"] for message in other] == ["hello"], other
    finally:
        # Newest first: a child forked later holds a copy of the earlier ones' hold pipes.
        for release in reversed(releases):
            release()
        log = stopped(service)
    assert "refused process" in log and "already has 2 connections" in log


@pytest.fixture
def group_listing_nobody():
    """A group of the machine's group database that lists uid 65534 (nobody) as a member."""
    name = f"dgt{secrets.token_hex(4)}"
    run("groupadd", "--users", "nobody", name)
    try:
        yield name, int(run("getent", "group", name).stdout.split(":")[2])
    finally:
        run("groupdel", name)


def test_allow_group_admits_the_groups_a_process_has_not_those_the_database_lists(netns, socket_directory,
                                                                                  group_listing_nobody):
    name, gid = group_listing_nobody
    assert gid in os.getgrouplist("nobody", 65534)
    path = os.path.join(socket_directory, "divert.sock")
    service = start_service(netns, path, "--allow-group", name)
    releases = []
    try:
        member, release = first_frames_as(path, 65534, [gid], 1)
        releases.append(release)
        dropped, release = first_frames_as(path, 65534, [], 1)
        releases.append(release)
    finally:
        # Newest first: a child forked later holds a copy of the earlier ones' hold pipes.
        for release in reversed(releases):
            release()
        log = stopped(service)
    assert [message["type"] for message in member] == ["hello"], member
    assert [message["type"] for message in dropped] == ["error"], dropped
    assert dropped[0]["message"].startswith("nobody (uid 65534) may not use this divert service: it serves uid 0 "
                                            f"(root), group {name}")
    assert "refused process" in log
