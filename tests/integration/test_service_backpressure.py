"""A client cannot outrun its service: the commands waiting for its session are bounded, and a
client that leaves mid-flood has its session ended at once; a user with no right to a `--listen`
service cannot fill its log by connecting in a loop."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from divertgui.service import framing
from divertgui.service.connection import MAX_WAITING_COMMANDS
from divertgui.service.refusal_log import REFUSALS_LOGGED
from tests.integration.test_service_netns import socket_directory
from tests.integration.test_service_peers import start_service, stopped
from tests.unit.test_service_connection import heavy_filter

pytestmark = pytest.mark.netns
__all__ = ["socket_directory"]

EXIT_BOUND = 5.0     # seconds from the end of its input to the service's exit: a correctness bound


def test_a_client_that_leaves_mid_flood_has_its_session_ended_at_once(netns):
    service = netns.popen([sys.executable, "-m", "divertgui.cli", "serve"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    threading.Thread(target=service.stdout.read, daemon=True).start()
    end, n = time.monotonic() + 3, 0
    while time.monotonic() < end:
        service.stdin.write(framing.encode_json({"type": "set_intercept", "filter": heavy_filter(n)}))
        n += 1
    service.stdin.close()
    left = time.monotonic()
    try:
        service.wait(EXIT_BOUND)
    except subprocess.TimeoutExpired:
        service.kill()
        raise AssertionError(f"the service still ran {EXIT_BOUND} s after its client left")
    finally:
        exited = time.monotonic()
        log = service.stderr.read().decode()
    assert service.returncode == 0, log
    assert exited - left < EXIT_BOUND
    assert "the client closed the connection; releasing held packets (forward) and ending" in log
    # What waited for the session when the client left was not carried out, and is counted: the
    # commands waiting, bounded, and the one being posted.
    not_done = re.search(r"(\d+) of its commands were not carried out", log)
    assert not_done, log
    assert 0 < int(not_done[1]) <= MAX_WAITING_COMMANDS + 1


def refused_in_a_loop(path: str, uid: int, seconds: float, threads: int) -> int:
    """Processes of `uid` connect to `path` and leave again for `seconds`; how many connections the
    service took and refused with its sentence."""
    report_r, report_w = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(report_r)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            counts = []
            end = time.monotonic() + seconds

            def connect_in_a_loop():
                refused = 0
                while time.monotonic() < end:
                    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                        client.settimeout(10)
                        client.connect(path)
                        kind, body = next(iter(framing.FrameReader(client.recv, framing.MAX_SERVICE_FRAME)))
                        assert framing.decode_json(body)["where"] == "access"
                        refused += 1
                counts.append(refused)

            workers = [threading.Thread(target=connect_in_a_loop) for _ in range(threads)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            os.write(report_w, f"{sum(counts)}\n".encode())
        finally:
            os._exit(0)
    os.close(report_w)
    with os.fdopen(report_r) as report:
        refused = int(report.readline() or "-1")
    os.waitpid(child, 0)
    return refused


def test_refusals_are_logged_at_a_bounded_rate_and_the_rest_counted(netns, socket_directory):
    path = os.path.join(socket_directory, "divert.sock")
    started = time.monotonic()
    service = start_service(netns, path)
    refused = refused_in_a_loop(path, 65534, 3.0, 8)
    log = stopped(service)
    seconds = time.monotonic() - started
    assert refused > 0
    one_by_one = re.findall(r"refused process \d+ of nobody \(uid 65534\): nobody \(uid 65534\) may not use", log)
    counted = [int(n) for n in re.findall(r"refused (\d+) more connections of nobody \(uid 65534\)", log)]
    assert len(one_by_one) + sum(counted) == refused
    # At most REFUSALS_LOGGED lines in each second the service ran, and one line counting the rest.
    assert len(one_by_one) <= REFUSALS_LOGGED * (int(seconds) + 1)
    assert len(counted) <= int(seconds) + 1
