"""`divert conditions` as a real process in a network namespace, measured by the receiver."""

from __future__ import annotations

import json
import signal
import statistics
import time

import pytest

from tests.integration.conftest import receive_all, receive_expected, udp_socket
from tests.integration.test_cli_netns import cli, finish, our_chains, start_cli

pytestmark = pytest.mark.netns

PORT = 40311
ROUNDS = 30


def one_way_ms(client, server, port: int) -> float:
    """Milliseconds from sending one datagram on loopback to the receiver reading it."""
    sent = time.monotonic_ns()
    client.sendto(b"probe", ("127.0.0.1", port))
    server.recv(64)
    return (time.monotonic_ns() - sent) / 1e6


def counter_rows(out: str) -> dict[str, dict[str, int]]:
    """The per-rule table `divert conditions` prints when it stops: rule -> counters."""
    lines = out.strip().splitlines()
    header = lines[0].split()
    assert header[0] == "rule", out
    rows = {}
    for line in lines[1:]:
        if line.startswith("received "):
            break
        name, *values = line.split()
        rows[name] = dict(zip(header[1:], map(int, values)))
    return rows


def test_a_lag_is_measured_by_the_receiver_and_sigterm_prints_counters_and_removes_rules(netns):
    process = start_cli(netns, "conditions", f"udp and udp.DstPort == {PORT}", "--lag", "50")
    try:
        assert our_chains(netns), "the conditions' rules are installed while it runs"
        with netns.entered():
            lagged, plain, client = udp_socket("127.0.0.1", PORT), udp_socket("127.0.0.1", PORT + 1), \
                udp_socket("127.0.0.1")
            delays, baseline = [], []
            for _ in range(ROUNDS):
                delays.append(one_way_ms(client, lagged, PORT))
                baseline.append(one_way_ms(client, plain, PORT + 1))
    finally:
        code, out, err = finish(process, signal.SIGTERM)
    assert code == 0, err
    assert min(delays) >= 49.0, f"every lagged datagram waited 50 ms: {sorted(delays)[:5]}"
    assert statistics.median(delays) - statistics.median(baseline) >= 45.0, (delays, baseline)
    rows = counter_rows(out)
    assert rows["lag"]["matched"] == ROUNDS and rows["lag"]["delayed"] == ROUNDS, out
    assert rows["lag"]["held"] == 0, out
    assert f"received {ROUNDS}, sent {ROUNDS}, dropped 0" in out, out
    assert our_chains(netns) == [], "SIGTERM removed the rules"


def test_a_profile_and_options_together_drop_and_duplicate_what_the_receiver_sees(netns, tmp_path):
    profile = tmp_path / "lossy.json"
    profile.write_text(json.dumps({"name": "lossy", "rules": [
        {"kind": "drop", "chance": 100.0, "filter": f"udp.DstPort == {PORT + 1}"}]}))
    process = start_cli(netns, "conditions", f"udp and (udp.DstPort == {PORT} or udp.DstPort == {PORT + 1})",
                        "--profile", str(profile), "--duplicate", "3:100", "--direction", "out")
    try:
        with netns.entered():
            copied, dropped, client = udp_socket("127.0.0.1", PORT), udp_socket("127.0.0.1", PORT + 1), \
                udp_socket("127.0.0.1")
            client.sendto(b"copy me", ("127.0.0.1", PORT))
            client.sendto(b"drop me", ("127.0.0.1", PORT + 1))
            got_copies = receive_expected(copied, 3, seconds=5.0, quiet=0.3)
            got_dropped = receive_all(dropped, 0.3)
    finally:
        code, out, err = finish(process, signal.SIGINT)
    assert code == 0, err
    assert got_copies == [b"copy me"] * 3
    assert got_dropped == []
    rows = counter_rows(out)
    assert rows["drop"]["matched"] == 1 and rows["drop"]["dropped"] == 1, out
    assert rows["duplicate"]["matched"] == 1 and rows["duplicate"]["duplicated"] == 2, out
    assert "received 2, sent 3, dropped 1, created 2, held 0" in out, out
    assert our_chains(netns) == []


def test_bad_usage_exits_2_with_what_is_wrong(netns):
    bad_filter = cli(netns, "conditions", "udp andd tcp", "--lag", "10")
    assert bad_filter.returncode == 2 and "at position 4" in bad_filter.stderr, bad_filter.stderr
    bad_value = cli(netns, "conditions", "udp", "--lag", "20000")
    assert bad_value.returncode == 2 and "--lag: inbound_ms 20000.0 is outside 0..15000" in bad_value.stderr
    nothing = cli(netns, "conditions", "udp")
    assert nothing.returncode == 2 and "no condition given" in nothing.stderr
    assert our_chains(netns) == []


def test_only_the_enabled_rules_of_a_profile_are_applied_and_divert(netns, tmp_path):
    profile = tmp_path / "mostly-off.json"
    profile.write_text(json.dumps({"name": "mostly-off", "rules": [
        {"kind": "drop", "name": "off-everything", "enabled": False, "chance": 100.0},
        {"kind": "lag", "enabled": False, "inbound_ms": 500, "outbound_ms": 500},
        {"kind": "drop", "name": "cut", "chance": 100.0, "filter": f"udp.DstPort == {PORT + 1}"}]}))
    process = start_cli(netns, "conditions", "udp", "--profile", str(profile))
    try:
        with netns.entered():
            kept, cut, client = udp_socket("127.0.0.1", PORT), udp_socket("127.0.0.1", PORT + 1), \
                udp_socket("127.0.0.1")
            for index in range(5):
                client.sendto(b"keep %d" % index, ("127.0.0.1", PORT))
                client.sendto(b"cut %d" % index, ("127.0.0.1", PORT + 1))
            got_kept = receive_expected(kept, 5, seconds=5.0, quiet=0.3)
            got_cut = receive_all(cut, 0.3)
        listed = cli(netns, "list")
    finally:
        code, out, err = finish(process, signal.SIGINT)
    assert code == 0, err
    assert got_kept == [b"keep %d" % index for index in range(5)] and got_cut == []
    assert f"(udp) and (((udp.DstPort == {PORT + 1})))" in listed.stdout, listed.stdout
    assert list(counter_rows(out)) == ["cut"], out
    # Only the datagrams the enabled rule selects reached the handle: the others stayed in the kernel.
    assert "received 5, sent 0, dropped 5" in out, out
    assert "lost 0 of 5 packets" in err, err
    assert our_chains(netns) == []


def test_a_profile_whose_rules_are_all_disabled_is_refused_before_anything_is_diverted(netns):
    refused = cli(netns, "conditions", "udp", "--profile", "clumsy-defaults")
    assert refused.returncode == 2, refused.stderr
    assert "every rule of profile 'clumsy-defaults' is disabled" in refused.stderr, refused.stderr
    assert our_chains(netns) == []


def test_forward_layer_conditions_lag_the_packets_a_router_forwards(routed):
    process = start_cli(routed.r, "conditions", "--layer", "forward", f"udp and udp.DstPort == {PORT}",
                        "--lag", "30")
    try:
        with routed.b.entered():
            server = udp_socket(routed.b_v4, PORT)
        with routed.a.entered():
            client = udp_socket(routed.a_v4)
        one_way = []
        for index in range(5):
            sent = time.monotonic_ns()
            client.sendto(b"routed %d" % index, (routed.b_v4, PORT))
            assert server.recv(64) == b"routed %d" % index
            one_way.append((time.monotonic_ns() - sent) / 1e6)
    finally:
        code, out, err = finish(process, signal.SIGTERM)
    assert code == 0, err
    assert min(one_way) >= 29.0, f"every forwarded datagram waited 30 ms: {sorted(one_way)}"
    rows = counter_rows(out)
    assert rows["lag"]["matched"] == 5 and rows["lag"]["delayed"] == 5, out
    assert our_chains(routed.r) == []
