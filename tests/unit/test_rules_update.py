"""Pipeline.update: rules known by their id keep their counters and held packets across edits."""

import pytest

from divertgui.engine.rules import Pipeline, RuleError
from tests.unit.test_rules_conditions import MS, assert_conserved, number, numbered

LAG = {"id": "lag-1", "kind": "lag", "inbound_ms": 100.0, "outbound_ms": 100.0}
DROP_NONE = {"id": "drop-1", "kind": "drop", "chance": 0.0}
THROTTLE = {"id": "throttle-1", "kind": "throttle", "frame_ms": 500.0, "chance": 100.0}


def feed(pipeline, packets, now):
    return pipeline.due(now) + pipeline.process(packets, now)


def test_an_unchanged_rule_goes_on_as_it_was():
    pipeline = Pipeline.from_dicts([LAG, DROP_NONE])
    lag = pipeline.rules[0]
    assert feed(pipeline, numbered(5), 0) == []
    assert pipeline.update([dict(LAG), dict(DROP_NONE)]) == []
    assert pipeline.rules[0] is lag and lag.held() == 5
    assert [number(p) for p in pipeline.due(100 * MS)] == [0, 1, 2, 3, 4]
    assert pipeline.rules[1].counters["matched"] == 5, "released packets still pass the rules after the lag"
    assert_conserved(pipeline)


def test_a_lag_change_keeps_counters_and_held_packets_and_applies_to_new_arrivals():
    pipeline = Pipeline.from_dicts([LAG])
    assert feed(pipeline, numbered(3), 0) == []
    assert pipeline.update([{**LAG, "inbound_ms": 10.0, "outbound_ms": 10.0}]) == []
    lag = pipeline.rules[0]
    assert lag.outbound_ms == 10.0 and lag.held() == 3
    assert lag.counters["matched"] == 3 and lag.counters["delayed"] == 3
    late = numbered(2)
    assert feed(pipeline, late, 50 * MS) == []
    assert pipeline.due(60 * MS) == late, "new arrivals take the new 10 ms"
    assert pipeline.due(99 * MS) == [], "held packets keep their 100 ms"
    assert [number(p) for p in pipeline.due(100 * MS)] == [0, 1, 2]
    assert lag.counters["matched"] == 5 and lag.counters["delayed"] == 5
    stats = pipeline.stats()
    assert stats["received"] == stats["sent"] == 5
    assert_conserved(pipeline)


def test_a_changed_throttle_keeps_its_open_frame_and_what_it_holds():
    pipeline = Pipeline.from_dicts([THROTTLE])
    assert feed(pipeline, numbered(4), 0) == []
    pipeline.update([{**THROTTLE, "chance": 0.0}])
    throttle = pipeline.rules[0]
    assert throttle.held() == 4 and throttle.counters["delayed"] == 4
    assert pipeline.next_deadline() == 500 * MS
    assert len(pipeline.due(500 * MS)) == 4
    assert_conserved(pipeline)


def test_a_removed_rule_lets_go_of_what_it_holds_and_the_others_keep_theirs():
    pipeline = Pipeline.from_dicts([LAG, THROTTLE])
    packets = numbered(4)
    assert feed(pipeline, packets, 0) == []
    assert pipeline.held() == 4
    released = pipeline.update([THROTTLE])
    assert [number(p) for p in released] == [0, 1, 2, 3]
    assert pipeline.held() == 0 and [r.kind for r in pipeline.rules] == ["throttle"]
    assert_conserved(pipeline)


def test_reordering_keeps_every_rule_its_state():
    pipeline = Pipeline.from_dicts([LAG, THROTTLE, DROP_NONE])
    lag, throttle, drop = pipeline.rules
    assert feed(pipeline, numbered(3), 0) == []
    assert feed(pipeline, numbered(2), 100 * MS) == [], "lagged packets meet the throttle's frame"
    assert (lag.held(), throttle.held()) == (2, 3)
    assert pipeline.update([DROP_NONE, THROTTLE, LAG]) == []
    assert pipeline.rules == [drop, throttle, lag]
    assert (lag.held(), throttle.held()) == (2, 3)
    assert lag.counters["matched"] == 5 and throttle.counters["matched"] == 3
    assert len(pipeline.due(200 * MS)) == 2, "the lag's own two, now past the last rule"
    assert pipeline.due(600 * MS) == [], "the frame opened at 100 ms closes"
    assert (lag.held(), throttle.held()) == (3, 0), "and its three now meet the lag after it"
    assert len(pipeline.due(700 * MS)) == 3 and pipeline.held() == 0
    assert_conserved(pipeline)


def test_a_rule_without_an_id_or_of_another_kind_is_a_new_rule():
    pipeline = Pipeline.from_dicts([{**LAG, "id": ""}, THROTTLE])
    feed(pipeline, numbered(2), 0)
    released = pipeline.update([{**LAG, "id": ""}, {"id": "throttle-1", "kind": "drop"}])
    assert len(released) == 2, "the id-less lag and the throttle whose id now names a drop let go"
    assert pipeline.rules[0].counters["matched"] == 0 and pipeline.rules[1].kind == "drop"
    assert_conserved(pipeline)


def test_a_bad_update_leaves_the_rules_as_they_were():
    pipeline = Pipeline.from_dicts([LAG])
    lag = pipeline.rules[0]
    feed(pipeline, numbered(2), 0)
    with pytest.raises(RuleError, match="rule 2"):
        pipeline.update([LAG, {"id": "x", "kind": "lag", "inbound_ms": -1.0}])
    with pytest.raises(RuleError, match="same id: lag-1"):
        pipeline.update([LAG, {**LAG, "inbound_ms": 5.0}])
    with pytest.raises(RuleError, match="lag.id"):
        pipeline.update([{**LAG, "id": [1]}])
    assert pipeline.rules == [lag] and lag.held() == 2


def test_ids_survive_to_dicts():
    pipeline = Pipeline.from_dicts([LAG, {"kind": "drop"}])
    dicts = pipeline.to_dicts()
    assert dicts[0]["id"] == "lag-1" and "id" not in dicts[1]
