"""Capture workers for a member of the capture group: `divert passthru --workers 2` and a capture
service's two-worker capture, run as uid 65534 holding CAP_NET_ADMIN and CAP_NET_RAW the way the
installed `divert`'s file capabilities give them (permitted and effective, nothing inheritable or
ambient). Workers are forked, never exec'd, so they hold the same two and nothing ambient."""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from divertgui.engine.store import CaptureStore
from divertgui.service.client import ServiceClient
from divertgui.service.hardening import MINIMAL_ENVIRONMENT
from tests.integration.conftest import receive_expected, wait_until, worker_processes
from tests.integration.test_capabilities import BECOME_NOBODY
from tests.integration.test_cli_netns import READY, finish, our_chains
from tests.integration.test_service_hardening import status_of
from tests.integration.test_workers_netns import _queue_ids

pytestmark = pytest.mark.netns
NET_ADMIN_AND_RAW = 1 << 12 | 1 << 13
SOURCES, DATAGRAMS = 12, 10     # loopback sources: netfilter picks a worker by a hash of the addresses

# Everything the program reads is imported first: the interpreter lives where uid 65534 cannot read it.
DIVERT_AS_MEMBER = """
import sys
import divertgui.cli, divertgui.engine.worker_pool, divertgui.engine.pooled_capture, divertgui.service.serve
import divertgui.engine.backends.handle_registry, divertgui.engine.filter
import multiprocessing.popen_forkserver, multiprocessing.resource_tracker, multiprocessing.spawn, selectors
import multiprocessing.sharedctypes, multiprocessing.queues, multiprocessing.synchronize, multiprocessing.heap
from divertgui.engine import fork_server
for name in fork_server.WORKER_MODULES:
    __import__(name)
divertgui.cli.build_parser()
""" + BECOME_NOBODY + """
sys.exit(divertgui.cli.main(sys.argv[2:]))
"""


def start_as_member(netns, *arguments: str) -> subprocess.Popen:
    """`divert ARGUMENTS` as uid 65534 with the installed program's capabilities, started as the
    hardened service restarts itself: minimal environment, isolated mode."""
    return subprocess.Popen([shutil.which("ip"), "netns", "exec", netns.name, sys.executable, "-I", "-c",
                             DIVERT_AS_MEMBER, "file", *arguments], env=MINIMAL_ENVIRONMENT, cwd="/",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_forked_workers(owner: int) -> list[int]:
    workers = wait_until(lambda: len(worker_processes(owner)) == 2 and worker_processes(owner), 20)
    assert workers, f"no two workers under process {owner}"
    for pid in workers:
        status = status_of(pid)
        assert int(status["Uid"].split()[0]) == 65534
        assert int(status["CapEff"], 16) & NET_ADMIN_AND_RAW == NET_ADMIN_AND_RAW, status["CapEff"]
        assert int(status["CapAmb"], 16) == 0 and int(status["CapInh"], 16) == 0
    return workers


def send_flows(netns, port: int) -> list[bytes]:
    """DATAGRAMS from each of SOURCES loopback addresses to `port`; what arrived."""
    with netns.entered():
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        receiver.bind(("127.0.0.1", port))
        senders = []
        for k in range(SOURCES):
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sender.bind((f"127.0.1.{k + 1}", 0))
            senders.append(sender)
        for n in range(DATAGRAMS):
            for k, sender in enumerate(senders):
                sender.sendto(b"%d.%d" % (k, n), ("127.0.0.1", port))
            time.sleep(0.005)
        got = receive_expected(receiver, SOURCES * DATAGRAMS, 10)
        for sock in (receiver, *senders):
            sock.close()
    return got


def test_passthru_over_two_workers_as_a_group_member(netns):
    port = 40721
    process = start_as_member(netns, "passthru", f"udp.DstPort == {port}", "--workers", "2")
    seen = ""
    end = time.monotonic() + 30
    while READY not in seen and time.monotonic() < end and process.poll() is None:
        if select.select([process.stderr], [], [], 0.5)[0]:
            seen += process.stderr.readline()
    try:
        assert READY in seen, seen + (process.stderr.read() if process.poll() is not None else "")
        assert_forked_workers(process.pid)
        got = send_flows(netns, port)
        queued = _queue_ids(netns)
    finally:
        code, printed, err = finish(process, signal.SIGINT)
    assert code == 0, err
    assert len(got) == SOURCES * DATAGRAMS
    assert len([n for n in queued.values() if n > 0]) == 2, f"both workers' queues carried packets: {queued}"
    counters = dict(item.split("=") for item in printed.split("counters: ")[1].split())
    assert int(counters["diverted"]) == int(counters["sent"]) == SOURCES * DATAGRAMS, printed
    assert our_chains(netns) == []


@pytest.fixture
def members_directory():
    """A directory of uid 65534's own, where its service may listen."""
    directory = tempfile.mkdtemp(prefix="divertgui-member-", dir="/tmp")
    os.chown(directory, 65534, 65534)
    os.chmod(directory, 0o700)
    yield directory
    shutil.rmtree(directory)


def test_a_group_members_capture_service_captures_over_two_workers(netns, members_directory):
    port = 40723
    path = os.path.join(members_directory, "divert.sock")
    service = start_as_member(netns, "serve", "--listen", path, "--allow-uid", "0")
    events: list[dict] = []
    store = CaptureStore()
    client = None
    try:
        assert wait_until(lambda: os.path.exists(path) or service.poll() is not None, 30), "no socket"
        assert service.poll() is None, service.stderr.read()
        client = ServiceClient(f"unix:{path}", store, events.append)
        client.start()
        assert wait_until(lambda: client.hello, 20), client.stderr_text()
        assert client.hello["live"] == ""
        client.post("start", source="live", mode="divert", workers=2, filter=f"udp.DstPort == {port}")
        assert wait_until(lambda: any(e["type"] in ("state", "error") for e in events), 60)
        assert [e["message"] for e in events if e["type"] == "error"] == []
        assert_forked_workers(service.pid)
        got = send_flows(netns, port)
        assert len(got) == SOURCES * DATAGRAMS
        assert wait_until(lambda: len(store) >= SOURCES * DATAGRAMS, 20), len(store)
        queued = _queue_ids(netns)
        assert len([n for n in queued.values() if n > 0]) == 2, f"both workers' queues carried packets: {queued}"
        client.post("stop")
        assert wait_until(lambda: [e for e in events if e["type"] == "state" and not e["running"]], 30)
    finally:
        if client is not None:
            client.close()
        service.send_signal(signal.SIGTERM)
        _, log = service.communicate(timeout=20)
    assert service.returncode == 0, log
    assert len(store) == SOURCES * DATAGRAMS
    assert our_chains(netns) == []
