"""Rule kinds by name, and rules to and from plain dicts (JSON)."""

from __future__ import annotations

from divertgui.engine.rules.bandwidth import Bandwidth
from divertgui.engine.rules.base import Rule, RuleError
from divertgui.engine.rules.drop import Drop
from divertgui.engine.rules.duplicate import Duplicate
from divertgui.engine.rules.lag import Lag
from divertgui.engine.rules.payload_replace import PayloadReplace
from divertgui.engine.rules.reorder import OutOfOrder
from divertgui.engine.rules.reset import Reset
from divertgui.engine.rules.set_field import SetField
from divertgui.engine.rules.tamper import Tamper
from divertgui.engine.rules.throttle import Throttle

RULE_KINDS: dict[str, type[Rule]] = {
    kind.kind: kind
    for kind in (Lag, Drop, Throttle, OutOfOrder, Duplicate, Tamper, Reset, Bandwidth, SetField, PayloadReplace)
}


def rule_from_dict(data: dict, index: int | None = None) -> Rule:
    """A rule from {"kind": ..., "enabled": ..., "filter": ..., "direction": ..., parameters...}."""
    where = "rule" if index is None else f"rule {index + 1}"
    if not isinstance(data, dict):
        raise RuleError(f"expected a mapping with a 'kind', not {type(data).__name__}", where)
    kind = data.get("kind")
    if kind not in RULE_KINDS:
        raise RuleError(f"unknown kind {kind!r} (kinds: {', '.join(RULE_KINDS)})", where)
    fields = {key: value for key, value in data.items() if key != "kind"}
    try:
        return RULE_KINDS[kind](**fields)
    except RuleError as exc:
        raise RuleError(str(exc), where, exc.position) from exc
    except TypeError as exc:
        raise RuleError(f"{kind}: {exc}", where) from exc


def rules_from_dicts(items) -> list[Rule]:
    if not isinstance(items, list):
        raise RuleError(f"rules must be a list, not {type(items).__name__}")
    return [rule_from_dict(item, i) for i, item in enumerate(items)]


def rules_to_dicts(rules) -> list[dict]:
    return [rule.to_dict() for rule in rules]
