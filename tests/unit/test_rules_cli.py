"""`divert conditions` options turned into rules, and its counter table."""

import argparse
import io
import json

import pytest

from divertgui.engine.rules import Pipeline, rules_from_dicts
from divertgui.engine.rules.cli_args import add_conditions_parser, conditions_main, format_stats, rules_from_args


def parse(*argv):
    parser = argparse.ArgumentParser(prog="divert")
    add_conditions_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["conditions", *argv])


def test_every_option_becomes_a_rule_in_clumsy_order():
    args = parse("udp", "--bandwidth", "500", "--lag", "20:40", "--jitter", "3", "--drop", "2.5",
                 "--throttle", "30:10", "--reorder", "5", "--duplicate", "3:20", "--tamper", "1",
                 "--reset", "4", "--direction", "out")
    rules = rules_from_args(args)
    assert [r["kind"] for r in rules] == ["lag", "drop", "throttle", "out_of_order", "duplicate", "tamper",
                                          "reset", "bandwidth"]
    assert rules[0] == {"kind": "lag", "inbound_ms": 20.0, "outbound_ms": 40.0, "jitter_ms": 3.0,
                        "direction": "outbound"}
    assert rules[2]["frame_ms"] == 30.0 and rules[2]["chance"] == 10.0
    assert rules[4]["count"] == 3 and rules[4]["chance"] == 20.0
    assert all(r["direction"] == "outbound" for r in rules)
    assert len(rules_from_dicts(rules)) == 8
    assert args.run is conditions_main and args.filter == "udp"


def test_a_single_lag_value_applies_both_ways():
    assert rules_from_args(parse("true", "--lag", "15"))[0]["inbound_ms"] == 15.0


def test_profile_rules_come_first(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"rules": [{"kind": "set_field", "fields": {"ttl": 5}}]}))
    rules = rules_from_args(parse("tcp", "--profile", str(path), "--drop", "1"))
    assert [r["kind"] for r in rules] == ["set_field", "drop"]


def test_a_malformed_option_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse("udp", "--throttle", "fast")
    assert "throttle MS:PCT" in capsys.readouterr().err


def test_out_of_range_values_say_which_rule(capsys):
    err = io.StringIO()
    assert conditions_main(parse("udp", "--drop", "150"), out=io.StringIO(), err=err) == 2
    assert "--drop: chance 150.0 is outside 0..100" in err.getvalue()


def test_no_condition_is_an_error():
    err = io.StringIO()
    assert conditions_main(parse("udp"), out=io.StringIO(), err=err) == 2
    assert "no condition given" in err.getvalue()


def test_counter_table():
    pipeline = Pipeline(rules_from_dicts([{"kind": "drop", "chance": 100.0}, {"kind": "lag", "name": "slow"}]))
    stats = pipeline.stats()
    stats["rules"][0]["dropped"] = 7
    text = format_stats(stats).splitlines()
    assert text[0].split() == ["rule", "matched", "dropped", "delayed", "duplicated", "modified", "injected", "held"]
    assert text[1].split()[:3] == ["drop", "0", "7"] and text[2].split()[0] == "slow"
    assert text[-1].startswith("received 0, sent 0")
