"""What every rule has: enabled, a filter, a direction, declared parameters,
per-rule counters, and the hooks a Pipeline calls.

Hooks (all optional but `process`):
    process(packet, now_ns, out)   a matching packet: append what continues to `out`
                                   (nothing: dropped or held; more: copies, new packets)
    observe(packet)                a packet this rule does not match (seq/ack fixing needs it)
    due(now_ns) -> list            held packets whose time has come, in order
    next_deadline() -> int | None  when the next held packet is due
    release_all() -> list          every held packet, now (on stop: nothing is lost)
    pass_matched(packets, now_ns)  when `packets` (all matching, in order) would each pass on
                                   unchanged, alone, drawing nothing: do for them what process
                                   would and return True; otherwise change nothing, return False
    draw_matched(packets, now_ns)  for a rule that passes a packet on unchanged, drops it, or
                                   sends it followed by copies made by copy(packet): do for
                                   `packets` (all matching, in order) what process would, drawing
                                   the same numbers in the same order, but make no copies; returns
                                   how many times each goes out (0: dropped)
    adopt(old)                     take over the counters and `carried` state of the same
                                   rule before its parameters changed (Pipeline.update)
Times are nanoseconds of a monotonic clock the caller passes in.
"""

from __future__ import annotations

import dataclasses
import math
import random

from divertgui.engine.address import Layer
from divertgui.engine.errors import RuleError
from divertgui.engine.filter import FilterError, compile_filter

DIRECTIONS = ("both", "inbound", "outbound")
COUNTERS = ("matched", "dropped", "delayed", "duplicated", "modified", "injected")


@dataclasses.dataclass(frozen=True)
class Param:
    """A rule parameter: its default and what it accepts (a numeric range or a set of choices).

    A numeric parameter (its default a number) declares both bounds.
    """

    default: object
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None

    def __post_init__(self):
        numeric = isinstance(self.default, (int, float)) and not isinstance(self.default, bool)
        if numeric and (self.low is None or self.high is None):
            raise TypeError(f"a numeric parameter needs both bounds, not {self.low}..{self.high}")

    def check(self, value, where: str):
        default = self.default
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise RuleError(f"expects true or false, not {value!r}", where)
            return value
        if isinstance(default, (int, float)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RuleError(f"expects a number, not {value!r}", where)
            # NaN compares false with every bound, so it is refused by name.
            if not math.isfinite(value) or not self.low <= value <= self.high:
                raise RuleError(f"{value} is outside {_number(self.low)}..{_number(self.high)}", where)
            if isinstance(default, int) and value != int(value):
                raise RuleError(f"expects a whole number, not {value!r}", where)
            return type(default)(value)
        if self.choices is not None:
            if value not in self.choices:
                raise RuleError(f"{value!r} is not one of {', '.join(map(str, self.choices))}", where)
            return value
        if isinstance(default, str) and not isinstance(value, str):
            raise RuleError(f"expects text, not {value!r}", where)
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise RuleError(f"expects a mapping, not {value!r}", where)
            return dict(value)
        return value


def _number(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def chance(percent: float) -> Param:
    """A probability in percent, as Clumsy shows it (10.0 means one packet in ten)."""
    return Param(float(percent), 0.0, 100.0)


class Rule:
    """A network condition or rewrite applied to the packets its filter and direction select."""

    kind = "rule"
    params: dict[str, Param] = {}
    # Attributes made by setup() that outlive a change of parameters: held packets, per-connection state.
    carried: tuple[str, ...] = ()

    def __init__(self, filter: str = "true", direction: str = "both", enabled: bool = True,
                 name: str = "", id: str | int = "", **values):
        self.name = name or self.kind
        if isinstance(id, bool) or not isinstance(id, (str, int)):
            raise RuleError(f"id expects text or a whole number, not {id!r}", f"{self.kind}.id")
        # The rule's identity across Pipeline.update; "" for a rule that has none.
        self.id = id
        if direction not in DIRECTIONS:
            raise RuleError(f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}",
                            f"{self.kind}.direction")
        self.direction = direction
        self.enabled = bool(enabled)
        self.filter_text = (filter or "true").strip()
        try:
            self.filter = compile_filter(self.filter_text, Layer.NETWORK)
        except FilterError as exc:
            raise RuleError(f"filter {self.filter_text!r}: {exc.message} at position {exc.position}",
                            f"{self.kind}.filter", exc.position) from exc
        self._match_all = self.filter_text == "true"
        self._outbound = {"both": None, "inbound": False, "outbound": True}[direction]
        for key in values:
            if key not in self.params:
                known = ", ".join(self.params) or "none"
                raise RuleError(f"unknown parameter {key!r} (parameters: {known})", f"{self.kind}.{key}")
        for key, param in self.params.items():
            value = values.get(key, param.default)
            setattr(self, key, param.check(value, f"{self.kind}.{key}"))
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.rng = random.Random(0)
        self.setup()

    def setup(self) -> None:
        """Derived state, after the parameters are set."""

    # -- selection --------------------------------------------------------------

    def applies(self, packet) -> bool:
        if self._outbound is not None and packet.address.outbound != self._outbound:
            return False
        return self._match_all or self.filter.match(packet.raw, packet.address)

    def hit(self, percent: float) -> bool:
        return percent > 0 and (percent >= 100 or self.rng.random() * 100 < percent)

    def hits(self, percent: float, count: int) -> list[bool]:
        """hit(percent) `count` times in turn, drawing the same numbers, without a call each."""
        if percent <= 0 or percent >= 100:
            return [percent > 0] * count
        random = self.rng.random
        return [random() * 100 < percent for _ in range(count)]

    # -- hooks ----------------------------------------------------------------------

    def process(self, packet, now_ns: int, out: list) -> None:
        out.append(packet)

    observe = None      # a rule that needs to see unmatched packets defines observe(packet)
    pass_matched = None  # a rule that can pass a whole batch at once defines pass_matched(packets, now_ns)
    draw_matched = None  # a rule that only passes, drops or copies defines draw_matched(packets, now_ns)
    rewrites = False    # True for a rule whose process or observe may change a packet's bytes

    def due(self, now_ns: int) -> list:
        return []

    def next_deadline(self) -> int | None:
        return None

    def release_all(self) -> list:
        return []

    def held(self) -> int:
        return 0

    def adopt(self, old: Rule) -> None:
        """Continues `old`: its counters keep counting, its held packets leave as scheduled."""
        for key, value in old.counters.items():
            self.counters[key] = value
        self.rng = old.rng
        for name in self.carried:
            setattr(self, name, getattr(old, name))

    # -- description ---------------------------------------------------------------

    def to_dict(self) -> dict:
        data = {"kind": self.kind, "enabled": self.enabled, "filter": self.filter_text,
                "direction": self.direction}
        if self.name != self.kind:
            data["name"] = self.name
        if self.id != "":
            data["id"] = self.id
        for key in self.params:
            data[key] = getattr(self, key)
        return data

    def stats(self) -> dict:
        return {"kind": self.kind, "name": self.name, **self.counters, "held": self.held()}

    def __repr__(self) -> str:
        values = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.params)
        return f"{type(self).__name__}({self.filter_text!r}, {self.direction}, {values})"
