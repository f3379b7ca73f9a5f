"""The Session on a live source in a network namespace: its rules act on real traffic."""

from __future__ import annotations

import statistics

import pytest

from tests.integration.conftest import receive_all, udp_socket
from tests.integration.test_cli_conditions import one_way_ms
from tests.integration.test_cli_netns import our_chains
from tests.unit.test_session import Running

pytestmark = pytest.mark.netns

PORT = 40411
ROUNDS = 20


def live_session(netns, cgroup: str, rules: list[dict], filter_text: str) -> Running:
    with netns.entered():
        # The session thread is created here, so it diverts inside the namespace.
        running = Running()
    running.post("set_rules", rules=rules)
    running.post("start", source="live", filter=filter_text, mode="divert", priority=0, layer="NETWORK",
                 cgroup=cgroup)
    state = running.wait_for(lambda e: e["type"] in ("state", "error"), "state event")
    assert state["type"] == "state" and state["source"] == "live" and not state["reason"], state
    return running


def test_a_live_lag_is_measured_by_the_receiver_and_stop_removes_the_rules(netns, capture_cgroup):
    running = live_session(netns, capture_cgroup, [{"kind": "lag", "inbound_ms": 40.0, "outbound_ms": 40.0}],
                           f"udp.DstPort == {PORT}")
    try:
        with netns.entered():
            lagged, plain, client = udp_socket("127.0.0.1", PORT), udp_socket("127.0.0.1", PORT + 1), \
                udp_socket("127.0.0.1")
            delays = [one_way_ms(client, lagged, PORT) for _ in range(ROUNDS)]
            baseline = [one_way_ms(client, plain, PORT + 1) for _ in range(ROUNDS)]
        event = running.wait_for(lambda e: e["type"] == "rows" and e["stats"]["rules"][0]["matched"] == ROUNDS,
                                 "the lag's counters")
        assert event["stats"]["rules"][0]["delayed"] == ROUNDS
        assert min(delays) >= 39.0 and statistics.median(delays) - statistics.median(baseline) >= 35.0
        running.post("stop")
        running.wait_for(lambda e: e["type"] == "state" and not e["running"], "stopped")
        assert our_chains(netns) == []
        assert len(running.store) == ROUNDS, "the list shows each lagged datagram once, as it left"
    finally:
        running.stop()


def test_a_live_drop_rule_loses_what_it_matches(netns, capture_cgroup):
    running = live_session(netns, capture_cgroup,
                           [{"kind": "drop", "chance": 100.0, "filter": f"udp.DstPort == {PORT}"}],
                           f"udp.DstPort == {PORT} or udp.DstPort == {PORT + 1}")
    try:
        with netns.entered():
            dropped, kept, client = udp_socket("127.0.0.1", PORT), udp_socket("127.0.0.1", PORT + 1), \
                udp_socket("127.0.0.1")
            for i in range(5):
                client.sendto(b"lost %d" % i, ("127.0.0.1", PORT))
                client.sendto(b"kept %d" % i, ("127.0.0.1", PORT + 1))
            got_dropped, got_kept = receive_all(dropped, 0.3), receive_all(kept, 0.3)
        assert got_dropped == []
        assert sorted(got_kept) == [b"kept %d" % i for i in range(5)]
        event = running.wait_for(lambda e: e["type"] == "rows" and e["stats"]["rules"][0]["dropped"] == 5,
                                 "the drop counters")
        assert event["stats"]["rules"][0]["matched"] == 5
    finally:
        running.stop()
    assert our_chains(netns) == []
