"""`divert conditions` options turned into rules, and its counter table."""

import json

import pytest

from divertgui import cli
from divertgui.engine.address import Layer
from divertgui.engine.rules import Pipeline, rules_from_dicts
from divertgui.engine.rules.cli_args import format_stats, rules_from_args
from divertgui.engine.rules.profiles import PRESETS_DIR


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


def test_disabled_rules_make_nothing_diverted():
    pipeline = Pipeline.from_dicts([{"kind": "drop", "enabled": False},
                                    {"kind": "payload_replace", "enabled": False, "find": "a", "replace": "b"},
                                    {"kind": "lag", "filter": "udp.DstPort == 53"}])
    assert pipeline.divert_filter("udp") == "(udp) and (((udp.DstPort == 53)))"
    assert Pipeline.from_dicts(json.loads((PRESETS_DIR / "clumsy-defaults.json").read_text())["rules"]
                               ).divert_filter("udp") == "false"


def test_at_the_forward_layer_every_packet_is_outbound():
    pipeline = Pipeline.from_dicts([{"kind": "drop", "direction": "inbound"},
                                    {"kind": "lag", "filter": "udp.DstPort == 53", "direction": "outbound"}])
    assert pipeline.divert_filter("udp", Layer.NETWORK_FORWARD) == "(udp) and (((udp.DstPort == 53)))"
    assert Pipeline.from_dicts([{"kind": "lag", "direction": "outbound"}]).divert_filter(
        "udp", Layer.NETWORK_FORWARD) == "udp"
    assert Pipeline.from_dicts([{"kind": "lag", "direction": "inbound"}]).divert_filter(
        "udp", Layer.NETWORK_FORWARD) == "false"


def test_a_profile_whose_rules_are_all_disabled_is_refused(capsys):
    assert cli.main(["conditions", "udp", "--profile", "clumsy-defaults"]) == 2
    err = capsys.readouterr().err
    assert "every rule of profile 'clumsy-defaults' is disabled" in err and "--lag" in err, err
    assert '"enabled": true' in err


def test_inbound_conditions_at_the_forward_layer_are_refused(capsys, tmp_path):
    assert cli.main(["conditions", "--layer", "forward", "udp", "--lag", "30", "--direction", "in"]) == 2
    assert "--direction: in: at --layer forward every packet is outbound" in capsys.readouterr().err
    inbound = tmp_path / "inbound.json"
    inbound.write_text(json.dumps({"rules": [{"kind": "drop", "direction": "inbound"}]}))
    assert cli.main(["conditions", "--layer", "forward", "udp", "--profile", str(inbound)]) == 2
    assert "the profile's rules, all inbound, would apply to none" in capsys.readouterr().err


def test_counter_table():
    pipeline = Pipeline(rules_from_dicts([{"kind": "drop", "chance": 100.0}, {"kind": "lag", "name": "slow"}]))
    stats = pipeline.stats()
    stats["rules"][0]["dropped"] = 7
    text = format_stats(stats).splitlines()
    assert text[0].split() == ["rule", "matched", "dropped", "delayed", "duplicated", "modified", "injected", "held"]
    assert text[1].split()[:3] == ["drop", "0", "7"] and text[2].split()[0] == "slow"
    assert text[-1].startswith("received 0, sent 0")



def test_the_counter_table_leaves_out_disabled_rules():
    pipeline = Pipeline.from_dicts([{"kind": "drop", "enabled": False}, {"kind": "lag", "name": "slow"}])
    rows = format_stats(pipeline.stats(), [rule.enabled for rule in pipeline.rules]).splitlines()
    assert [row.split()[0] for row in rows] == ["rule", "slow", "received"]
