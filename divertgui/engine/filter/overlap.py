"""Whether two filters can accept the same packet, decided conservatively.

`may_overlap` answers False only when no packet can pass both: each tree is
widened into a union of conjunctions of tests (a conditional keeps both of
its branches and drops its test), and every pair of conjunctions, one from
each side, is shown contradictory by value ranges per field and by which
headers can be present together (one of IPv4 / IPv6; at most one of TCP,
UDP, ICMP, ICMPv6; ICMP only over IPv4, ICMPv6 only over IPv6; inbound is
not outbound). Whatever this cannot decide counts as "may overlap".

The session uses it for a rule whose filter can never match what the
capture filter takes (a lag on `icmp` while capturing `tcp.DstPort == 8000`).
"""

from __future__ import annotations

import math

from .ast import Cond, Const, Node, Or, Test
from .fields import FIELDS

# Beyond this many conjunctions a tree is too wide to compare: the answer is "may overlap".
MAX_TERMS = 256
_TRANSPORTS = ("tcp", "udp", "icmp", "icmpv6")
_NEEDS = {"icmp": "ip", "icmpv6": "ipv6"}


def _terms(node: Node) -> list[tuple[Test, ...]] | None:
    """A union of conjunctions that accepts at least what `node` accepts; None when too wide."""
    if isinstance(node, Const):
        return [()] if node.value else []
    if isinstance(node, Test):
        return [(node,)]
    if isinstance(node, Cond):
        node = Or(node.then, node.otherwise)
    left, right = _terms(node.left), _terms(node.right)
    if left is None or right is None:
        return None
    terms = left + right if isinstance(node, Or) else [a + b for a in left for b in right]
    return terms if len(terms) <= MAX_TERMS else None


class _Ranges:
    """The values each (field, index) may still take; `empty` once one has none."""

    def __init__(self):
        self.bounds: dict[tuple, list] = {}
        self.excluded: dict[tuple, set] = {}
        self.empty = False

    def add(self, field: str, op: str, value: int, index: int | None = None) -> None:
        key = (field, index)
        spec = FIELDS.get(field)
        if key not in self.bounds:
            low = spec.lo if spec is not None and spec.lo is not None else -math.inf
            high = spec.hi if spec is not None and spec.hi is not None else math.inf
            self.bounds[key] = [low, high]
        bounds = self.bounds[key]
        if op == "==":
            bounds[0], bounds[1] = max(bounds[0], value), min(bounds[1], value)
        elif op == "!=":
            self.excluded.setdefault(key, set()).add(value)
        elif op == "<":
            bounds[1] = min(bounds[1], value - 1)
        elif op == "<=":
            bounds[1] = min(bounds[1], value)
        elif op == ">":
            bounds[0] = max(bounds[0], value + 1)
        else:
            bounds[0] = max(bounds[0], value)
        excluded = self.excluded.get(key, ())
        while bounds[0] <= bounds[1] and bounds[0] in excluded:
            bounds[0] += 1
        while bounds[0] <= bounds[1] and bounds[1] in excluded:
            bounds[1] -= 1
        if bounds[0] > bounds[1]:
            self.empty = True

    def values(self, field: str) -> set[int]:
        """The values a 0..1 field may take."""
        low, high = self.bounds.get((field, None), (0, 1))
        return {value for value in (0, 1) if low <= value <= high and value not in self.excluded.get((field, None), ())}


def _satisfiable(tests: tuple[Test, ...]) -> bool:
    ranges = _Ranges()
    for test in tests:
        spec = FIELDS.get(test.field)
        if spec is not None and spec.guard is not None:
            # A test on a header field is false when the header is absent.
            ranges.add(spec.guard, "!=", 0)
        ranges.add(test.field, test.op, test.value, test.index)
        if ranges.empty:
            return False
    present = {name for name in ("ip", "ipv6", *_TRANSPORTS) if ranges.values(name) == {1}}
    if {"ip", "ipv6"} <= present or len(present & set(_TRANSPORTS)) > 1:
        return False
    for header, network in _NEEDS.items():
        if header in present and ranges.values(network) == {0}:
            return False
        other = "ipv6" if network == "ip" else "ip"
        if header in present and other in present:
            return False
    inbound, outbound = ranges.values("inbound"), ranges.values("outbound")
    return bool(inbound & {1 - value for value in outbound})


def may_overlap(first: Node, second: Node) -> bool:
    """False only when no packet can pass both filter trees."""
    first_terms, second_terms = _terms(first), _terms(second)
    if first_terms is None or second_terms is None:
        return True
    return any(_satisfiable(a + b) for a in first_terms for b in second_terms)


def texts_may_overlap(first: str, second: str, layer) -> bool:
    """may_overlap for filter texts at `layer`; True when either does not compile."""
    from . import FilterError, compile_filter
    try:
        return may_overlap(compile_filter(first or "true", layer).tree, compile_filter(second or "true", layer).tree)
    except FilterError:
        return True
