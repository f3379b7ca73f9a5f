"""The rules pipeline: an ordered list of rules over batches of packets.

A packet runs through the enabled rules in order. A rule may pass it on,
drop it, hold it (it resumes at the next rule when due), or add packets
(copies, RSTs) that run through the rules after it. The clock is passed in
(nanoseconds, monotonic), so tests drive time without sleeping.

Nothing is lost without a count:
    received + created == sent + dropped + held
where created counts duplicates and injected packets.

update() changes the rules in place and keeps what it can, rules being
known by their "id": an unchanged rule goes on as it was, wherever it
moved; a changed one keeps its counters and held packets (new parameters
apply to packets arriving from then on); a removed one lets go of what it
holds. A rule without an id is always a new rule.
"""

from __future__ import annotations

import random

from divertgui.engine.rules.base import Rule, RuleError
from divertgui.engine.rules.registry import rules_from_dicts, rules_to_dicts


class Pipeline:
    def __init__(self, rules=(), seed: int = 0):
        self.seed = seed
        self.rules: list[Rule] = list(rules)
        for index, rule in enumerate(self.rules):
            rule.rng = random.Random(f"{seed}:{index}:{rule.kind}")
        self.received = 0
        self.sent = 0

    @classmethod
    def from_dicts(cls, items, seed: int = 0) -> "Pipeline":
        return cls(rules_from_dicts(items), seed)

    def to_dicts(self) -> list[dict]:
        return rules_to_dicts(self.rules)

    def update(self, items, seed: int | None = None) -> list:
        """Replaces the rules by those `items` describe; returns the packets removed rules held.

        The caller sends those on (they skip the rules after their holder, as on
        stop). A bad rule raises RuleError and leaves the pipeline as it was.
        `seed` seeds the rules new to the pipeline; the others keep their draws.
        """
        fresh = rules_from_dicts(items)
        ids = [rule.id for rule in fresh if rule.id != ""]
        repeated = sorted({str(i) for i in ids if ids.count(i) > 1})
        if repeated:
            raise RuleError(f"two rules have the same id: {', '.join(repeated)}", "rules")
        if seed is not None:
            self.seed = seed
        previous = {rule.id: rule for rule in self.rules if rule.id != ""}
        rules, kept = [], set()
        for index, rule in enumerate(fresh):
            old = previous.get(rule.id) if rule.id != "" else None
            if old is not None and old.kind == rule.kind:
                kept.add(id(old))
                if old.to_dict() == rule.to_dict():
                    rule = old
                else:
                    rule.adopt(old)
            else:
                rule.rng = random.Random(f"{self.seed}:{index}:{rule.kind}")
            rules.append(rule)
        released: list = []
        for rule in self.rules:
            if id(rule) not in kept:
                released.extend(rule.release_all())
        self.rules = rules
        self.sent += len(released)
        return released

    # -- moving packets ------------------------------------------------------------

    def _run(self, packets: list, start: int, now_ns: int) -> list:
        rules = self.rules
        for index in range(start, len(rules)):
            rule = rules[index]
            if not rule.enabled or not packets:
                continue
            passed: list = []
            counters, observe, process = rule.counters, rule.observe, rule.process
            # Rule.applies, inlined: this loop is the per-packet cost of every rule.
            outbound, match = rule._outbound, None if rule._match_all else rule.filter.match
            for packet in packets:
                address = packet.address
                if ((outbound is None or address.outbound == outbound)
                        and (match is None or match(packet.raw, address))):
                    counters["matched"] += 1
                    process(packet, now_ns, passed)
                else:
                    if observe is not None:
                        observe(packet)
                    passed.append(packet)
            packets = passed
        return packets

    def process(self, packets: list, now_ns: int) -> list:
        """The packets to send now: those of `packets` (and what rules added) that no rule holds or drops."""
        self.received += len(packets)
        out = self._run(packets, 0, now_ns) if self.rules else list(packets)
        self.sent += len(out)
        return out

    def due(self, now_ns: int) -> list:
        """Held packets whose time has come, after the rules that follow their holder."""
        out: list = []
        for index, rule in enumerate(self.rules):
            ready = rule.due(now_ns)
            if ready:
                out.extend(self._run(ready, index + 1, now_ns))
        self.sent += len(out)
        return out

    def next_deadline(self) -> int | None:
        deadlines = [d for d in (rule.next_deadline() for rule in self.rules) if d is not None]
        return min(deadlines, default=None)

    def release_all(self) -> list:
        """Every held packet, now, without running the remaining rules: nothing is lost on stop."""
        out: list = []
        for rule in self.rules:
            out.extend(rule.release_all())
        self.sent += len(out)
        return out

    # -- counting -------------------------------------------------------------------------

    def held(self) -> int:
        return sum(rule.held() for rule in self.rules)

    def stats(self) -> dict:
        """Totals and one dict of counters per rule, in rule order (plain JSON values)."""
        rules = [rule.stats() for rule in self.rules]
        dropped = sum(r["dropped"] for r in rules)
        created = sum(r["duplicated"] + r["injected"] for r in rules)
        return {"received": self.received, "sent": self.sent, "dropped": dropped, "created": created,
                "held": self.held(), "rules": rules}
