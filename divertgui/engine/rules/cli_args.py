"""`divert conditions`' options: the argument types, the condition options
(add_condition_options adds them to the subcommand the CLI makes), the rules
they stand for, and the counter table printed at the end. The command itself
is cmd_conditions in divertgui/cli.py.
"""

from __future__ import annotations

import argparse

from divertgui.engine.address import PARAM_LIMITS, PRIORITY_MAX, PRIORITY_MIN, Param
from divertgui.engine.rules.base import RuleError
from divertgui.engine.rules.lag import Lag
from divertgui.engine.rules.pipeline import Pipeline
from divertgui.engine.rules.profiles import load_profile
from divertgui.engine.rules.registry import RULE_KINDS, rules_from_dicts

_DIRECTIONS = {"in": "inbound", "out": "outbound", "both": "both"}
_COLUMNS = ("matched", "dropped", "delayed", "duplicated", "modified", "injected", "held")


def _pair(text: str, what: str) -> tuple[float, float]:
    first, sep, second = text.partition(":")
    try:
        return float(first), float(second) if sep else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: expected numbers like {what.split()[-1]}, not {text!r}")


def whole_number(low: int, high: int):
    """An argparse type: a whole number (decimal, 0x hex) in low..high."""
    def parse(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low}..{high}")
        return value
    return parse


priority = whole_number(PRIORITY_MIN, PRIORITY_MAX)
QUEUE_LENGTH_LIMITS = PARAM_LIMITS[Param.QUEUE_LENGTH][1:]
queue_length = whole_number(*QUEUE_LENGTH_LIMITS)
# Lagged and throttled packets wait in the kernel queue: conditions give them room.
CONDITIONS_QUEUE_LENGTH = QUEUE_LENGTH_LIMITS[1]


def add_loss_options(parser, queue_default: str = "4096") -> None:
    """--queue-length and --strict, for the commands that divert."""
    parser.add_argument("--queue-length", type=queue_length, metavar="N",
                        help=f"packets the kernel queue holds for divert, {QUEUE_LENGTH_LIMITS[0]}.."
                             f"{QUEUE_LENGTH_LIMITS[1]} (default {queue_default}); beyond it packets are lost")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 3 if any packet was lost (queue full or waited too long)")


def _lag(text):
    inbound, outbound = _pair(text, "lag MS or IN_MS:OUT_MS")
    return inbound, inbound if outbound is None else outbound


def _throttle(text):
    frame, percent = _pair(text, "throttle MS:PCT")
    return frame, 10.0 if percent is None else percent


def _duplicate(text):
    count, percent = _pair(text, "duplicate N:PCT")
    return count, 10.0 if percent is None else percent


FORWARD_OUTBOUND = "at --layer forward every packet is outbound (a routed packet, as in WinDivert)"

CONDITIONS_DESCRIPTION = (
    "Divert the packets FILTER selects and apply network conditions to them until SIGINT or SIGTERM, "
    "then print per-rule counters. Rules run in the order lag, drop, throttle, reorder, duplicate, "
    "tamper, reset, bandwidth, after those of --profile (its disabled rules left out). "
    "Only packets some enabled rule can match are diverted.")


def add_condition_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lag", type=_lag, metavar="MS[:MS]", help="delay (inbound:outbound if two values)")
    parser.add_argument("--jitter", type=float, metavar="MS", help="lag jitter, +- MS (uniform); needs --lag")
    parser.add_argument("--drop", type=float, metavar="PCT", help="drop this percentage of packets")
    parser.add_argument("--throttle", type=_throttle, metavar="MS:PCT", help="throttle frames of MS, started with PCT")
    parser.add_argument("--reorder", type=float, metavar="PCT", help="send this percentage out of order")
    parser.add_argument("--duplicate", type=_duplicate, metavar="N:PCT", help="send PCT of packets N times")
    parser.add_argument("--tamper", type=float, metavar="PCT", help="flip a payload byte in PCT of packets")
    parser.add_argument("--reset", type=float, metavar="PCT", help="reset TCP connections on PCT of packets")
    parser.add_argument("--bandwidth", type=float, metavar="KBPS", help="limit each direction to KBPS kbit/s")
    parser.add_argument("--direction", choices=tuple(_DIRECTIONS), default="both",
                        help="which packets the options above apply to")
    parser.add_argument("--profile", metavar="FILE", help="rules from a profile (file, saved name or preset)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the rules' randomness")
    add_loss_options(parser, queue_default=str(CONDITIONS_QUEUE_LENGTH))


def option_rules(args) -> list[tuple[str, dict]]:
    """(option, rule dict) for each condition option given, in Clumsy's order."""
    common = {"direction": _DIRECTIONS[args.direction]}
    rules = []
    if args.lag is not None:
        rules.append(("--lag", {"kind": "lag", "inbound_ms": args.lag[0], "outbound_ms": args.lag[1],
                                "jitter_ms": args.jitter or 0.0, **common}))
    if args.drop is not None:
        rules.append(("--drop", {"kind": "drop", "chance": args.drop, **common}))
    if args.throttle is not None:
        rules.append(("--throttle", {"kind": "throttle", "frame_ms": args.throttle[0],
                                     "chance": args.throttle[1], **common}))
    if args.reorder is not None:
        rules.append(("--reorder", {"kind": "out_of_order", "chance": args.reorder, **common}))
    if args.duplicate is not None:
        count = args.duplicate[0]
        rules.append(("--duplicate", {"kind": "duplicate", "count": int(count) if count.is_integer() else count,
                                      "chance": args.duplicate[1], **common}))
    if args.tamper is not None:
        rules.append(("--tamper", {"kind": "tamper", "chance": args.tamper, **common}))
    if args.reset is not None:
        rules.append(("--reset", {"kind": "reset", "chance": args.reset, **common}))
    if args.bandwidth is not None:
        rules.append(("--bandwidth", {"kind": "bandwidth", "kbps": args.bandwidth, **common}))
    return rules


def rules_from_args(args) -> list[dict]:
    """Rule dicts for the options given, after those of --profile."""
    rules = list(load_profile(args.profile)["rules"]) if args.profile else []
    return rules + [data for _, data in option_rules(args)]


def pipeline_from_args(args) -> Pipeline:
    """The rules of --profile, then of the options, checked against the rules' declared parameters.

    A bad value raises RuleError whose message names the option, the
    parameter and the range it accepts.
    """
    rules = rules_from_dicts(list(load_profile(args.profile)["rules"])) if args.profile else []
    if args.jitter is not None:
        _checked("--jitter", lambda: Lag.params["jitter_ms"].check(args.jitter, "lag.jitter_ms"))
        if args.lag is None:
            raise RuleError("needs --lag (jitter varies the lag's delay)", "--jitter")
    options = option_rules(args)
    if options and args.direction == "in" and args.layer == "forward":
        raise RuleError(f"in: {FORWARD_OUTBOUND}: use out or both", "--direction")
    for option, data in options:
        fields = dict(data)
        kind = RULE_KINDS[fields.pop("kind")]
        rules.append(_checked(option, lambda: kind(**fields)))
    return Pipeline(rules, seed=args.seed)


def _checked(option: str, build):
    try:
        return build()
    except RuleError as exc:
        parameter = exc.where.partition(".")[2]
        raise RuleError(f"{parameter} {exc.message}" if parameter else exc.message, option) from exc


def format_stats(stats: dict, enabled=None) -> str:
    """Per-rule counters as a table, then the totals; `enabled` (a flag per rule, in order)
    leaves out the rows of disabled rules, which count nothing."""
    rules = stats["rules"] if enabled is None else [r for r, on in zip(stats["rules"], enabled) if on]
    width = max([len("rule")] + [len(r["name"]) for r in rules])
    lines = ["rule".ljust(width) + "".join(f"{c:>11}" for c in _COLUMNS)]
    for rule in rules:
        lines.append(rule["name"].ljust(width) + "".join(f"{rule.get(c, 0):>11}" for c in _COLUMNS))
    lines.append(f"received {stats['received']}, sent {stats['sent']}, dropped {stats['dropped']}, "
                 f"created {stats['created']}, held {stats['held']}, send errors {stats.get('send_errors', 0)}, "
                 f"send failed {stats.get('send_failed', 0)}")
    return "\n".join(lines)
