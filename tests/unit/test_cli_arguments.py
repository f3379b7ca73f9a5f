"""`divert` refuses bad option values and shows bad filters readably, before diverting anything."""

from __future__ import annotations

import json

import pytest

from divertgui import cli
from divertgui.engine.filter import FilterError
from divertgui.engine.filter.errors import CONTEXT, report_lines
from divertgui.engine.rules import RuleError, rules_from_dicts


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("option, value, complaint", [
    ("--drop", "nan", "--drop: chance nan is outside 0..100"),
    ("--drop", "inf", "--drop: chance inf is outside 0..100"),
    ("--drop", "101", "--drop: chance 101.0 is outside 0..100"),
    ("--lag", "nan", "--lag: inbound_ms nan is outside 0..15000"),
    ("--lag", "10:-1", "--lag: outbound_ms -1.0 is outside 0..15000"),
    ("--bandwidth", "nan", "--bandwidth: kbps nan is outside 1..10000000"),
    ("--reorder", "nan", "--reorder: chance nan is outside 0..100"),
    ("--throttle", "nan:nan", "--throttle: frame_ms nan is outside 0..1000"),
    ("--throttle", "30:nan", "--throttle: chance nan is outside 0..100"),
    ("--duplicate", "2:nan", "--duplicate: chance nan is outside 0..100"),
    ("--duplicate", "nan", "--duplicate: count nan is outside 2..50"),
    ("--duplicate", "2.5", "--duplicate: count expects a whole number, not 2.5"),
    ("--tamper", "-inf", "--tamper: chance -inf is outside 0..100"),
    ("--reset", "nan", "--reset: chance nan is outside 0..100"),
])
def test_a_value_out_of_its_range_names_the_option_and_the_range(capsys, option, value, complaint):
    code, out, err = run_main(capsys, "conditions", "udp", f"{option}={value}")
    assert code == 2 and out == ""
    assert err == f"divert: conditions: {complaint}\n"


def test_jitter_without_lag_says_what_is_wrong_with_jitter(capsys):
    code, _, err = run_main(capsys, "conditions", "udp", "--jitter", "3")
    assert code == 2 and err == "divert: conditions: --jitter: needs --lag (jitter varies the lag's delay)\n"


@pytest.mark.parametrize("extra", [(), ("--lag", "10")])
def test_a_negative_jitter_is_out_of_range_with_or_without_lag(capsys, extra):
    code, _, err = run_main(capsys, "conditions", "udp", "--jitter", "-3", *extra)
    assert code == 2 and err == "divert: conditions: --jitter: jitter_ms -3.0 is outside 0..15000\n"


def test_the_conditions_priority_is_checked_like_the_other_commands(capsys):
    code, _, err = run_main(capsys, "conditions", "udp", "--drop", "1", "--priority", "40000")
    assert code == 2 and "outside -30000..30000" in err


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1"])
def test_duration_must_be_a_finite_positive_number(capsys, value):
    code, _, err = run_main(capsys, "passthru", "udp", "--duration", value)
    assert code == 2 and f"--duration: {value} is not a number of seconds more than 0" in err


@pytest.mark.parametrize("value", ["nan", "inf", "-5", "200000"])
def test_gather_must_be_microseconds_in_range(capsys, value):
    code, _, err = run_main(capsys, "passthru", "udp", "--gather", value)
    assert code == 2 and f"--gather: '{value}' is not a number of microseconds from 0 to 100000" in err


def test_a_profile_value_that_is_not_finite_is_refused(tmp_path, capsys):
    path = tmp_path / "nan.json"
    path.write_text('{"rules": [{"kind": "lag", "inbound_ms": NaN}]}')
    code, _, err = run_main(capsys, "conditions", "udp", "--profile", str(path))
    assert code == 2 and "lag.inbound_ms: nan is outside 0..15000" in err


@pytest.mark.parametrize("rule", [
    {"kind": "lag", "jitter_ms": float("nan")}, {"kind": "bandwidth", "burst_bytes": float("inf")},
    {"kind": "out_of_order", "max_hold_ms": float("nan")},
    {"kind": "throttle", "max_packets": float("nan")}, {"kind": "tamper", "flips": float("-inf")},
])
def test_no_rule_parameter_takes_a_non_finite_number(rule):
    with pytest.raises(RuleError, match="is outside"):
        rules_from_dicts([json.loads(json.dumps(rule))])


# -- how a bad filter is shown ---------------------------------------------------------


def test_a_long_filter_is_shown_around_the_caret(capsys):
    text = "tcp and " * 600 + "udpp" + " or tcp" * 14_000      # about 103 kB
    code, _, err = run_main(capsys, "check", text)
    message, shown, caret, hint = err.rstrip("\n").split("\n")
    position = len("tcp and " * 600)
    assert code == 2 and message.endswith(f"(at position {position})")
    assert shown == "  ..." + text[position - CONTEXT:position + CONTEXT] + "..."
    assert caret == "  " + " " * (3 + CONTEXT) + "^"
    assert shown[len(caret) - 1:].startswith("udpp")
    assert hint == "  did you mean `udp`?"


def test_a_short_filter_is_shown_whole():
    lines = report_lines("tcp or udpp", FilterError("m", 7))
    assert lines[1:] == ["tcp or udpp", "       ^"]


def test_a_byte_that_is_not_utf8_is_escaped_and_the_caret_stays_under_the_position(capsys):
    # argv decodes a stray byte 0xFF to the lone surrogate U+DCFF.
    code, _, err = run_main(capsys, "check", "tcp and \udcff and udp")
    message, shown, caret = err.rstrip("\n").split("\n")
    assert code == 2 and message.endswith("(at position 9)")
    assert shown == "  tcp and \\xff and udp"
    assert caret.index("^") == len("  tcp and \\xff")
    assert "\udcff" not in err


def test_control_characters_are_escaped_and_tabs_kept():
    lines = report_lines("tcp\x01 \tand udpp", FilterError("m", 10))
    assert lines[1] == "tcp\\x01 \tand udpp"
    assert lines[2] == "        \t    ^"


def test_positions_are_said_the_same_way_by_every_command(capsys):
    _, _, check_err = run_main(capsys, "check", "tcp and udpp")
    code, _, err = run_main(capsys, "conditions", "tcp and udpp", "--drop", "1")
    assert code == 2
    assert "(at position 8)" in check_err and "(at position 8)" in err
    assert err.split("\n")[1:] == check_err.split("\n")[1:]
    with pytest.raises(RuleError, match="at position 8"):
        rules_from_dicts([{"kind": "drop", "filter": "tcp and udpp"}])


def test_the_window_s_command_line_shows_a_bad_filter_the_same_way():
    import os
    import subprocess
    import sys
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    done = subprocess.run([sys.executable, "-m", "divertgui.app", "--filter", "TCP.dstport == 1"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2
    assert done.stderr.endswith("--filter: Filter expression contains a bad token (at position 0)\n"
                                "  TCP.dstport == 1\n  ^\n  did you mean `tcp.DstPort`?\n"), done.stderr
