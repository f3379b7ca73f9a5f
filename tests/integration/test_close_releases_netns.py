"""What the rules hold when diverting stops in the middle of a stream (`divert conditions`
on SIGTERM, a session stopped, a capture service on SIGTERM) reaches the receiver or is
counted as dropped: received + dropped == sent, and the counters say so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.integration.conftest import udp_socket, wait_until
from tests.integration.test_cli_conditions import counter_rows
from tests.integration.test_cli_netns import our_chains, start_cli
from tests.integration.test_service_netns import socket_directory  # noqa: F401  (a fixture)
from tests.integration.test_session_rules_netns import live_session

pytestmark = pytest.mark.netns

PORT = 40391
COUNT = 1000
RATE = 500.0        # datagrams per second
STOP_AFTER = 500    # diverting stops once this many were sent
LAG_MS = 500.0


class Stream:
    """COUNT numbered datagrams at RATE from a client to a server on the loopback of `netns`,
    `stop()` called once STOP_AFTER were sent; the server's datagrams are in `got`."""

    def __init__(self, netns):
        with netns.entered():
            self.server, self.client = udp_socket("127.0.0.1", PORT), udp_socket("127.0.0.1")
        self.got: list[bytes] = []
        self._done = threading.Event()
        self._receiver = threading.Thread(target=self._receive, daemon=True)
        self._receiver.start()

    def _receive(self) -> None:
        self.server.settimeout(2.0)
        while True:
            try:
                self.got.append(self.server.recv(64))
            except TimeoutError:
                if self._done.is_set():
                    return

    def send(self, stop) -> None:
        start = time.monotonic()
        for index in range(COUNT):
            self.client.sendto(b"%d" % index, ("127.0.0.1", PORT))
            if index + 1 == STOP_AFTER:
                stop()
            time.sleep(max(0.0, start + (index + 1) / RATE - time.monotonic()))

    def finish(self) -> list[bytes]:
        """Everything received, once the server has been quiet for 2 s."""
        self._done.set()
        self._receiver.join(timeout=30)
        self.server.close()
        self.client.close()
        assert len(set(self.got)) == len(self.got), "no datagram arrived twice"
        return self.got


def totals(out: str) -> dict[str, int]:
    """The last line of the counters: "received R, sent S, dropped D, created C, held H, ..."."""
    line = next(line for line in out.splitlines() if line.startswith("received "))
    return {name: int(value) for name, value in (part.rsplit(" ", 1) for part in line.split(", "))}


def test_sigterm_in_the_middle_of_a_lagged_stream_loses_nothing_uncounted(netns):
    process = start_cli(netns, "conditions", f"udp.DstPort == {PORT}", "--lag", str(LAG_MS), "--drop", "10")
    stream = Stream(netns)
    stopped = []
    try:
        stream.send(lambda: stopped.append(process.send_signal(signal.SIGTERM)))
    finally:
        # One SIGTERM only: a second one while Python finalises would kill it by default.
        if not stopped:
            process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
        got = stream.finish()
    assert process.returncode == 0, err
    counts, rows = totals(out), counter_rows(out)
    assert counts["held"] == 0 and rows["lag"]["held"] == 0, out
    # Datagrams sent after the rules went pass undiverted, so each one is either
    # received or one the drop rule counted.
    assert len(got) + counts["dropped"] == COUNT, (len(got), out, err)
    assert counts["received"] == counts["sent"] + counts["dropped"], out
    assert counts["dropped"] > 0, "the drop rule dropped some of the diverted datagrams"
    assert our_chains(netns) == []


def test_stopping_a_session_in_the_middle_of_a_lagged_stream_loses_nothing_uncounted(netns, capture_cgroup):
    running = live_session(netns, capture_cgroup, [{"kind": "lag", "inbound_ms": LAG_MS, "outbound_ms": LAG_MS},
                                   {"kind": "drop", "chance": 10.0}], f"udp.DstPort == {PORT}")
    stream = Stream(netns)
    try:
        stream.send(lambda: running.post("stop"))
        running.wait_for(lambda e: e["type"] == "state" and not e["running"], "stopped")
        got = stream.finish()
        final = running.session.stats()["rules_total"]
    finally:
        running.stop()
    assert final["held"] == 0, final
    assert len(got) + final["dropped"] == COUNT, (len(got), final)
    assert final["received"] == final["sent"] + final["dropped"], final
    assert final["dropped"] > 0, final
    assert our_chains(netns) == []


def test_sigterm_to_the_capture_service_in_the_middle_of_a_lagged_stream_loses_nothing_uncounted(
        netns, socket_directory):  # noqa: F811
    from divertgui.engine.store import CaptureStore
    from divertgui.service.client import ServiceClient
    path = os.path.join(socket_directory, "divert.sock")
    service = netns.popen([sys.executable, "-m", "divertgui.cli", "serve", "--listen", path, "--allow-uid", "0"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert wait_until(lambda: os.path.exists(path) or service.poll() is not None, 20), "no socket"
    events: list[dict] = []
    client = ServiceClient(f"unix:{path}", CaptureStore(), events.append)
    try:
        client.start()
        client.post("set_rules", rules=[{"kind": "lag", "inbound_ms": LAG_MS, "outbound_ms": LAG_MS},
                                        {"kind": "drop", "chance": 10.0}])
        client.post("start", source="live", mode="divert", filter=f"udp.DstPort == {PORT}")
        assert wait_until(lambda: any(e["type"] == "state" and e.get("running") for e in list(events)), 20), events
        stream = Stream(netns)
        stream.send(lambda: service.send_signal(signal.SIGTERM))
        service.wait(timeout=30)
        got = stream.finish()
    finally:
        client.close()
        if service.poll() is None:
            service.kill()
            service.wait(timeout=10)
    assert service.returncode == 0, service.stderr.read()
    final = [e for e in events if e["type"] == "rows"][-1]["stats"]["rules_total"]
    assert final["held"] == 0, final
    assert len(got) + final["dropped"] == COUNT, (len(got), final)
    assert final["received"] == final["sent"] + final["dropped"], final
    assert final["dropped"] > 0, final
    assert our_chains(netns) == []
