"""`divert conditions` options turned into rules, and its counter table."""

import json

import pytest

from divertgui import cli
from divertgui.engine.rules import Pipeline, rules_from_dicts
from divertgui.engine.rules.cli_args import format_stats, rules_from_args


def parse(*argv):
    return cli.build_parser().parse_args(["conditions", *argv])


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
    assert args.run is cli.cmd_conditions and args.filter == "udp"


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
    assert cli.main(["conditions", "udp", "--drop", "150"]) == 2
    assert "--drop: chance 150.0 is outside 0..100" in capsys.readouterr().err


def test_no_condition_is_an_error(capsys):
    assert cli.main(["conditions", "udp"]) == 2
    assert "no condition given" in capsys.readouterr().err


def test_only_what_some_rule_can_match_is_diverted():
    pipeline = Pipeline.from_dicts([{"kind": "drop", "filter": "udp.DstPort == 53", "direction": "outbound"},
                                    {"kind": "lag", "filter": "tcp"}])
    assert pipeline.divert_filter("ip") == "(ip) and ((outbound and (udp.DstPort == 53)) or ((tcp)))"
    # A rule that must see every packet (payload_replace fixes later segments' numbers) keeps the filter.
    pipeline = Pipeline.from_dicts([{"kind": "payload_replace", "filter": "tcp.DstPort == 80", "find": "a",
                                     "replace": "b"}])
    assert pipeline.divert_filter("tcp") == "tcp"
    assert Pipeline.from_dicts([{"kind": "drop"}]).divert_filter("udp") == "udp"


def test_counter_table():
    pipeline = Pipeline(rules_from_dicts([{"kind": "drop", "chance": 100.0}, {"kind": "lag", "name": "slow"}]))
    stats = pipeline.stats()
    stats["rules"][0]["dropped"] = 7
    text = format_stats(stats).splitlines()
    assert text[0].split() == ["rule", "matched", "dropped", "delayed", "duplicated", "modified", "injected", "held"]
    assert text[1].split()[:3] == ["drop", "0", "7"] and text[2].split()[0] == "slow"
    assert text[-1].startswith("received 0, sent 0")
