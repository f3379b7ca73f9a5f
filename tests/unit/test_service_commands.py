"""Client commands are untrusted: every malformed one is refused whole, with a reason."""

import json

import pytest
from hypothesis import given, settings, strategies as st

from divertgui.engine.protocol import COMMANDS
from divertgui.service.commands import MAX_RULES, CommandError, validate


@pytest.mark.parametrize("command", [
    {"type": "start", "source": "demo", "filter": "tcp", "mode": "divert", "priority": -30000,
     "layer": "NETWORK_FORWARD", "rate": 10.5, "seed": 3},
    {"type": "forward", "ids": [1, 2], "data": {"2": "4500"}, "fix": True},
    {"type": "inject", "data": "60", "outbound": False, "if_idx": 4},
    {"type": "set_rules", "rules": [{"kind": "lag", "id": "a", "params": {"ms": 20}}], "version": 2},
    {"type": "set_hold_timeout", "seconds": 0, "action": "drop"},
    {"type": "shutdown"},
    {"type": "start", "source": "live", "workers": 1},
    {"type": "start", "source": "live", "workers": "auto"},
    {"type": "start", "source": "live", "cgroup": "system.slice/nginx.service"},
])
def test_well_formed_commands_pass(command):
    assert validate(command) is command


@pytest.mark.parametrize("command, says", [
    ({"type": "format_disk"}, "unknown command 'format_disk'"),
    ({"type": 7}, "unknown command 7"),
    ({}, "unknown command None"),
    ({"type": "stop", "extra": 1}, "stop: unknown field 'extra'"),
    ({"type": "start", "priority": 30001}, r"start.priority must be in -30000..30000, not 30001"),
    ({"type": "start", "priority": True}, "start.priority must be a whole number, not bool"),
    ({"type": "start", "source": "kernel"}, "start.source must be one of demo, live, replay"),
    ({"type": "start", "filter": "x" * 9000}, "start.filter is 9000 characters long; the limit is 8192"),
    ({"type": "start", "rate": 0}, "start.rate must be more than 0"),
    ({"type": "set_rate", "rate": 1e300}, "at most"),
    ({"type": "set_rate"}, "set_rate: missing rate"),
    ({"type": "forward", "ids": "1"}, "forward.ids must be a list of held packet ids, not str"),
    ({"type": "forward", "ids": [1], "data": [1]}, "forward.data must be a map of held packet ids"),
    ({"type": "forward", "ids": [0]}, r"forward.ids\[0\] must be in 1.."),
    ({"type": "forward", "ids": list(range(1, 70000))}, "has 69999 packets; the limit is 65536"),
    ({"type": "forward", "ids": [1], "data": {"one": "00"}}, "not a held packet id"),
    ({"type": "forward", "ids": [1], "data": {"1": "zz"}}, r"forward.data\[1\] is not hexadecimal"),
    ({"type": "forward", "ids": [1], "data": {"1": "00" * 70000}}, "characters long"),
    ({"type": "inject", "data": "45", "if_idx": -1}, "inject.if_idx must be in 0.."),
    ({"type": "set_hold_timeout", "seconds": -1}, "at least 0"),
    ({"type": "set_rules", "rules": [{}] * (MAX_RULES + 1)}, "the limit is 64"),
    ({"type": "set_rules", "rules": [[]]}, r"rules\[0\] must be an object"),
    ({"type": "set_rules", "rules": [{"a": {"b": {"c": {"d": {"e": 1}}}}}]}, "nested too deeply"),
    ({"type": "pause", "paused": "yes"}, "pause.paused must be true or false"),
    ({"type": "open"}, "open: missing path"),
    ({"type": "open", "path": 7}, "open.path must be"),
    ({"type": "start", "workers": 0}, r'start.workers must be "auto" or a whole number from 1 to \d+ \(the cores here\)'),
    ({"type": "start", "workers": 1 << 20}, r"start.workers must be .*, not 1048576"),
    ({"type": "start", "workers": "all"}, r"start.workers must be .*, not 'all'"),
    ({"type": "start", "workers": True}, r"start.workers must be .*, not True"),
])
def test_malformed_commands_are_refused_with_what_and_where(command, says):
    with pytest.raises(CommandError, match=says):
        validate(command)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(COMMANDS) + ["nope"]), st.dictionaries(
    st.sampled_from(["source", "filter", "mode", "priority", "layer", "path", "speed", "rate", "seed", "paused",
                     "seconds", "action", "ids", "data", "fix", "outbound", "if_idx", "rules", "version", "layers", "cgroup", "x"]),
    json_values, max_size=5))
def test_any_command_is_either_valid_or_refused(kind, fields):
    command = {"type": kind, **fields}
    try:
        validate(command)
    except CommandError as exc:
        assert str(exc)
    else:
        json.dumps(command, allow_nan=False)


def test_an_event_capture_command_names_layers_filters_and_a_cgroup_within_bounds():
    command = {"type": "start_events", "layers": {"FLOW": "", "SOCKET": "event == CONNECT", "REFLECT": "true"},
               "cgroup": "system.slice/nginx.service"}
    assert validate(command) is command
    assert validate({"type": "stop_events"}) == {"type": "stop_events"}


@pytest.mark.parametrize("command, says", [
    ({"type": "start_events"}, "start_events: missing layers"),
    ({"type": "start_events", "layers": {}}, "start_events.layers names no layer"),
    ({"type": "start_events", "layers": ["FLOW"]}, "start_events.layers must be a map of event layers to filters"),
    ({"type": "start_events", "layers": {"NETWORK": ""}}, "start_events.layers key must be one of FLOW, SOCKET, "
                                                          "REFLECT, not 'NETWORK'"),
    ({"type": "start_events", "layers": {"FLOW": None}}, "start_events.layers.FLOW must be text, not null"),
    ({"type": "start_events", "layers": {"FLOW": "x" * 9000}}, "start_events.layers.FLOW is 9000 characters"),
    ({"type": "start_events", "layers": {"FLOW": ""}, "cgroup": "../../etc"}, "must be a cgroup path under"),
    ({"type": "start", "source": "live", "cgroup": "../.."}, "start.cgroup must be a cgroup path under"),
    ({"type": "start", "source": "live", "cgroup": "/sys/fs/cgroup/x"}, "start.cgroup must be a cgroup path under"),
    ({"type": "start", "source": "live", "cgroup": ["a"]}, "start.cgroup must be text"),
    ({"type": "start_events", "layers": {"FLOW": ""}, "cgroup": "/sys/fs/cgroup"}, "must be a cgroup path under"),
    ({"type": "start_events", "layers": {"FLOW": ""}, "cgroup": "a//b"}, "must be a cgroup path under"),
    ({"type": "start_events", "layers": {"FLOW": ""}, "cgroup": "a/\0"}, "must be a cgroup path under"),
    ({"type": "start_events", "layers": {"FLOW": ""}, "cgroup": 3}, "start_events.cgroup must be text"),
    ({"type": "start_events", "layers": {"FLOW": ""}, "block": True}, "start_events: unknown field 'block'"),
    ({"type": "stop_events", "layers": {}}, "stop_events: unknown field 'layers'"),
])
def test_a_malformed_event_capture_command_is_refused_with_what_and_where(command, says):
    with pytest.raises(CommandError, match=says):
        validate(command)
