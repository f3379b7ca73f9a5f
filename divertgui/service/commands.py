"""Client commands checked as untrusted input before a Session sees them.

Each command's fields are declared as data: a field a command does not
declare, a value of the wrong type or out of range, an oversized text or
list: the command is refused whole with one sentence saying what and
where, and nothing changes.
"""

from __future__ import annotations

import math
from typing import Callable

from divertgui.engine.address import PRIORITY_MAX, PRIORITY_MIN
from divertgui.engine.backends.cgroups import relative_cgroup
from divertgui.engine.protocol import COMMANDS, worker_option

MAX_FILTER = 8192              # characters of a filter
MAX_PATH = 4096
MAX_IDS = 65536                # held packets named in one command
MAX_PACKET_HEX = 2 * (65535 + 40)
MAX_RULES = 64
MAX_RULE_TEXT = 4096           # characters of any text inside a rule
MAX_RULE_DEPTH = 4
MAX_SEED = (1 << 63) - 1


class CommandError(ValueError):
    """A command refused; the message says which field and why."""


Check = Callable[[str, object], object]


def _type_name(value) -> str:
    return "null" if value is None else type(value).__name__


def integer(low: int, high: int) -> Check:
    def check(name, value):
        if isinstance(value, bool) or not isinstance(value, int):
            raise CommandError(f"{name} must be a whole number, not {_type_name(value)}")
        if not low <= value <= high:
            raise CommandError(f"{name} must be in {low}..{high}, not {value}")
        return value
    return check


def number(low: float, high: float, low_open: bool = False) -> Check:
    def check(name, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise CommandError(f"{name} must be a number, not {_type_name(value)}")
        if value > high or value < low or (low_open and value == low):
            bound = f"more than {low}" if low_open else f"at least {low}"
            raise CommandError(f"{name} must be {bound} and at most {high}, not {value}")
        return float(value)
    return check


def text(limit: int) -> Check:
    def check(name, value):
        if not isinstance(value, str):
            raise CommandError(f"{name} must be text, not {_type_name(value)}")
        if len(value) > limit:
            raise CommandError(f"{name} is {len(value)} characters long; the limit is {limit}")
        return value
    return check


def choice(*options: str) -> Check:
    def check(name, value):
        if value not in options:
            raise CommandError(f"{name} must be one of {', '.join(options)}, not {value!r}"[:300])
        return value
    return check


def flag(name, value):
    if not isinstance(value, bool):
        raise CommandError(f"{name} must be true or false, not {_type_name(value)}")
    return value


def hex_bytes(limit: int) -> Check:
    def check(name, value):
        text(limit)(name, value)
        try:
            bytes.fromhex(value)
        except ValueError:
            raise CommandError(f"{name} is not hexadecimal bytes") from None
        return value
    return check


def sized(name, value, kind: type, what: str, limit: int, items: str) -> None:
    """`value` is a `kind` (described as `what`) of at most `limit` `items`."""
    if not isinstance(value, kind):
        raise CommandError(f"{name} must be {what}, not {_type_name(value)}")
    if len(value) > limit:
        raise CommandError(f"{name} has {len(value)} {items}; the limit is {limit}")


def id_list(name, value):
    sized(name, value, list, "a list of held packet ids", MAX_IDS, "packets")
    for index, ident in enumerate(value):
        integer(1, MAX_SEED)(f"{name}[{index}]", ident)
    return value


def pid_list(name, value):
    sized(name, value, list, "a list of process ids", MAX_IDS, "processes")
    for index, pid in enumerate(value):
        integer(1, (1 << 31) - 1)(f"{name}[{index}]", pid)
    return value


def edited_data(name, value):
    sized(name, value, dict, "a map of held packet ids to hexadecimal bytes", MAX_IDS, "packets")
    for key, data in value.items():
        if not (key.isascii() and key.isdigit() and len(key) <= 19):
            raise CommandError(f"{name} has the key {key[:40]!r}, which is not a held packet id")
        hex_bytes(MAX_PACKET_HEX)(f"{name}[{key}]", data)
    return value


def _rule_value(where: str, value, depth: int) -> None:
    if depth > MAX_RULE_DEPTH:
        raise CommandError(f"{where} is nested too deeply")
    if isinstance(value, str):
        text(MAX_RULE_TEXT)(where, value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or abs(value) > 1 << 62:
            raise CommandError(f"{where} is out of range: {value}")
    elif isinstance(value, list):
        sized(where, value, list, "a list", MAX_RULES, "items")
        for index, item in enumerate(value):
            _rule_value(f"{where}[{index}]", item, depth + 1)
    elif isinstance(value, dict):
        sized(where, value, dict, "an object", MAX_RULES, "fields")
        for key, item in value.items():
            text(64)(f"{where} key", key)
            _rule_value(f"{where}.{key}", item, depth + 1)
    elif value is not None and not isinstance(value, bool):
        raise CommandError(f"{where} has a value of type {_type_name(value)}")


def rule_list(name, value):
    """The shape and size of a rule list; the rules module judges the rules themselves."""
    sized(name, value, list, "a list of rules", MAX_RULES, "rules")
    for index, rule in enumerate(value):
        if not isinstance(rule, dict):
            raise CommandError(f"{name}[{index}] must be an object, not {_type_name(rule)}")
        _rule_value(f"{name}[{index}]", rule, 1)
    return value


def workers(name, value):
    try:
        worker_option(value, name)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    return value


def event_layers(name, value):
    sized(name, value, dict, "a map of event layers to filters", 3, "layers")
    if not value:
        raise CommandError(f"{name} names no layer: choose FLOW, SOCKET or REFLECT")
    for layer, filter_text in value.items():
        choice("FLOW", "SOCKET", "REFLECT")(f"{name} key", layer)
        text(MAX_FILTER)(f"{name}.{layer}", filter_text)
    return value


def cgroup_path(name, value):
    """A path relative to the cgroup v2 mount, without a way out of it."""
    text(MAX_PATH)(name, value)
    try:
        return relative_cgroup(value, name)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


SEED = integer(0, MAX_SEED)
FIELDS: dict[str, dict[str, Check]] = {
    "start": {"source": choice("demo", "live", "replay"), "filter": text(MAX_FILTER),
              "mode": choice("divert", "sniff", "drop"), "priority": integer(PRIORITY_MIN, PRIORITY_MAX),
              "layer": choice("NETWORK", "NETWORK_FORWARD"), "path": text(MAX_PATH),
              "speed": number(0, 1000), "rate": number(0, 1_000_000, low_open=True), "seed": SEED,
              "workers": workers, "cgroup": cgroup_path, "attached": flag},
    "stop": {},
    "open": {"path": text(MAX_PATH), "attached": flag},
    "pause": {"paused": flag},
    "clear": {},
    "set_rate": {"rate": number(0, 1_000_000, low_open=True)},
    "set_intercept": {"filter": text(MAX_FILTER)},
    "set_hold_timeout": {"seconds": number(0, 86400), "action": choice("forward", "drop")},
    "set_hold_processes": {"pids": pid_list},
    "forward": {"ids": id_list, "data": edited_data, "fix": flag},
    "forward_unmodified": {"ids": id_list},
    "drop": {"ids": id_list},
    "forward_all": {},
    "drop_all": {},
    "inject": {"data": hex_bytes(MAX_PACKET_HEX), "outbound": flag, "if_idx": integer(0, (1 << 32) - 1)},
    "set_rules": {"rules": rule_list, "seed": SEED, "version": integer(0, MAX_SEED)},
    "start_events": {"layers": event_layers, "cgroup": cgroup_path},
    "stop_events": {},
    "shutdown": {},
}
REQUIRED = {"open": {"path"}, "start_events": {"layers"}, "set_rate": {"rate"}, "inject": {"data"}, "set_hold_timeout": {"seconds"}}
assert set(FIELDS) == COMMANDS, "every session command is declared here"


def validate(message: dict) -> dict:
    """`message` when it is a well-formed command; CommandError otherwise."""
    kind = message.get("type")
    if not isinstance(kind, str) or kind not in FIELDS:
        shown = repr(kind)[:60]
        raise CommandError(f"unknown command {shown}: commands are {', '.join(sorted(FIELDS))}")
    fields = FIELDS[kind]
    for name, value in message.items():
        if name == "type":
            continue
        check = fields.get(name)
        if check is None:
            raise CommandError(f"{kind}: unknown field {name[:60]!r}")
        check(f"{kind}.{name}", value)
    missing = REQUIRED.get(kind, set()) - set(message)
    if missing:
        raise CommandError(f"{kind}: missing {', '.join(sorted(missing))}")
    return message
