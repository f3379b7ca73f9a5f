"""Rules in the Session loop: a real worker thread, the demo network as the source."""

from __future__ import annotations

import time

from divertgui.engine.packet import Packet
from divertgui.engine.store import Verdict
from tests.unit.session_harness import Running, start_demo

PINGS = "icmp and icmp.Type == 8"


def rules_event(r: Running, predicate, what: str, limit: float = 10.0) -> dict:
    """The first rows event whose per-rule counters satisfy `predicate`."""
    return r.wait_for(lambda e: e["type"] == "rows" and predicate(e["stats"]["rules"]), what, limit)


def stored(r: Running, filter_text: str) -> list[int]:
    from divertgui.engine.filter import compile_filter
    match = compile_filter(filter_text).match
    return [row for row in range(len(r.store)) if match(r.store.raw(row), r.store.address(row))]


def test_a_drop_rule_drops_what_it_matches_and_counts_it(running):
    running.post("set_rules", rules=[{"kind": "drop", "chance": 100.0, "filter": PINGS}])
    start_demo(running)
    event = rules_event(running, lambda rules: rules[0]["dropped"] >= 5, "five dropped pings")
    counters = event["stats"]["rules"][0]
    assert counters["kind"] == "drop" and counters["matched"] == counters["dropped"]
    assert event["stats"]["rules_total"]["dropped"] == counters["dropped"]
    backend = running.session.backend
    running.until(lambda: len(running.store) > 50, "other traffic stored")
    assert stored(running, PINGS) == [], "a dropped ping never reaches the store"
    assert backend.stats()["dropped"] >= counters["dropped"], "the network lost them"
    assert any(not Packet(raw).icmp for raw in backend.received)


def test_a_lag_rule_delays_packets_by_its_value(running):
    running.post("set_rules", rules=[{"kind": "lag", "inbound_ms": 300.0, "outbound_ms": 300.0}])
    started = time.monotonic_ns()
    start_demo(running)
    first = running.wait_for(lambda e: e["type"] == "rows" and e["count"] > 0, "the first lagged rows")
    seen = time.monotonic_ns()
    assert seen - started >= 300_000_000
    stamps = running.store.column("timestamp", 0, first["count"])
    assert int(stamps.max()) <= seen - 300_000_000, "every stored packet waited its 300 ms"
    later = rules_event(running, lambda rules: rules[0]["delayed"] >= 20, "twenty delayed packets")
    assert later["stats"]["rules"][0]["held"] > 0
    delays = [d for _, e in running.log if e["type"] == "rows" for d in e["delays_ms"]]
    assert delays and all(abs(d - 300.0) < 0.01 for d in delays)


def test_rules_run_before_the_intercept_filter(running):
    running.post("set_rules", rules=[{"kind": "lag", "inbound_ms": 250.0, "outbound_ms": 250.0,
                                      "filter": PINGS}])
    start_demo(running)
    running.post("set_intercept", filter=PINGS)
    held = running.held()
    now = time.monotonic_ns()
    stamp = int(running.store.column("timestamp", held["row"], held["row"] + 1)[0])
    assert now - stamp >= 250_000_000, "a lagged packet is held only once its lag is over"
    assert running.store.verdict(held["row"]) == Verdict.HELD


def test_duplicates_made_by_a_rule_are_stored_as_injected(running):
    running.post("set_rules", rules=[{"kind": "duplicate", "count": 3, "chance": 100.0, "filter": PINGS}])
    start_demo(running)
    rules_event(running, lambda rules: rules[0]["duplicated"] >= 4, "duplicated pings")
    running.until(lambda: len(stored(running, PINGS)) >= 6, "stored copies")
    verdicts = [running.store.verdict(row) for row in stored(running, PINGS)]
    assert verdicts.count(Verdict.INJECTED) >= 2 * verdicts.count(Verdict.PASSED) - 2


def test_a_bad_rule_filter_is_an_error_with_its_position_and_the_old_rules_stay(running):
    running.post("set_rules", rules=[{"kind": "drop", "chance": 100.0, "filter": PINGS}])
    running.post("set_rules", rules=[{"kind": "lag"}, {"kind": "drop", "filter": "tcp.DstPort == 80 andd udp"}])
    error = running.wait_for(lambda e: e["type"] == "error", "an error event")
    assert error["where"] == "rules"
    assert error["position"] == len("tcp.DstPort == 80 ")
    assert "rule 2" in error["message"] and "drop.filter" in error["message"]
    assert [rule["kind"] for rule in running.session.rules] == ["drop"]
    running.post("set_rules", rules=[{"kind": "lag", "inbound_ms": 99999.0}])
    error = running.wait_for(lambda e: e["type"] == "error", "an out-of-range error")
    assert error["where"] == "rules" and "inbound_ms" in error["message"] and "position" not in error


def test_stop_sends_on_every_packet_the_rules_hold(running):
    running.post("set_rules", rules=[{"kind": "lag", "inbound_ms": 1500.0, "outbound_ms": 1500.0}])
    start_demo(running, rate=500)
    rules_event(running, lambda rules: rules[0]["held"] >= 10, "ten lagged packets", limit=5)
    backend = running.session.backend
    running.post("stop")
    state = running.wait_for(lambda e: e["type"] == "state" and not e["running"], "stopped")
    assert state["reason"] == "stopped"
    final = running.wait_for(lambda e: e["type"] == "rows" and e["stats"]["rules"][0]["held"] == 0, "released")
    totals = final["stats"]["rules_total"]
    assert totals["held"] == 0 and totals["sent"] == totals["received"] > 0
    stats = backend.stats()
    assert stats.get("dropped", 0) == 0 and stats.get("expired", 0) == 0
    assert len(running.store) == totals["received"], "every released packet is in the list"


def test_replacing_the_rules_releases_what_the_old_ones_held(running):
    running.post("set_rules", rules=[{"kind": "lag", "inbound_ms": 1500.0, "outbound_ms": 1500.0}])
    start_demo(running, rate=500)
    rules_event(running, lambda rules: rules[0]["held"] >= 10, "ten lagged packets", limit=5)
    running.post("set_rules", rules=[])
    event = running.wait_for(lambda e: e["type"] == "rows" and e["stats"]["rules"] == [], "the new rules")
    backend = running.session.backend
    running.until(lambda: backend.stats().get("pending", 0) < 10, "the held packets released")
    assert backend.stats().get("dropped", 0) == 0
    assert event["stats"]["rules_total"]["held"] == 0


def test_rows_events_carry_the_store_generation(running):
    start_demo(running)
    before = running.wait_for(lambda e: e["type"] == "rows" and e["count"] > 0, "rows")
    running.post("clear")
    after = running.wait_for(lambda e: e["type"] == "rows" and e["generation"] != before["generation"],
                             "rows after the clear")
    assert after["generation"] == running.store.generation == before["generation"] + 1


def test_a_lag_edit_keeps_held_packets_and_counters_and_loses_nothing(running):
    lag = {"id": "lag-1", "kind": "lag", "inbound_ms": 1500.0, "outbound_ms": 1500.0}
    running.post("set_rules", rules=[lag], version=1)
    start_demo(running, rate=500)
    before = rules_event(running, lambda rules: rules[0]["held"] >= 10, "ten lagged packets", limit=5)
    counted = before["stats"]["rules"][0]
    running.post("set_rules", rules=[{**lag, "inbound_ms": 20.0, "outbound_ms": 20.0}], version=2)
    after = running.wait_for(lambda e: e["type"] == "rows" and e["stats"]["rules_version"] == 2,
                             "counters of the edited rule")
    edited = after["stats"]["rules"][0]
    assert edited["matched"] >= counted["matched"] and edited["delayed"] >= counted["delayed"], \
        "the counters go on from where they were"
    assert edited["held"] >= counted["held"] - 1, "packets held under 1500 ms are not let go by the edit"
    assert running.session.rules[0]["inbound_ms"] == 20.0
    later = rules_event(running, lambda rules: rules[0]["matched"] >= edited["matched"] + 50,
                        "fifty packets more under the new lag")
    assert later["stats"]["rules_version"] == 2
    backend = running.session.backend
    running.post("stop")
    running.wait_for(lambda e: e["type"] == "state" and not e["running"], "stopped")
    final = running.wait_for(lambda e: e["type"] == "rows" and e["stats"]["rules_total"]["held"] == 0,
                             "every held packet released")
    totals = final["stats"]["rules_total"]
    assert totals["sent"] == totals["received"] == final["stats"]["rules"][0]["matched"]
    assert backend.stats().get("dropped", 0) == 0 and backend.stats().get("expired", 0) == 0
    assert len(running.store) == totals["received"], "every packet, held through the edit or not, is listed"
