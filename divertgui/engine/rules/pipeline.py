"""The rules pipeline: an ordered list of rules over batches of packets.

A packet runs through the enabled rules in order. A rule may pass it on,
drop it, hold it (it resumes at the next rule when due), or add packets
(copies, RSTs) that run through the rules after it. The clock is passed in
(nanoseconds, monotonic), so tests drive time without sleeping.

Which rules a packet matches is decided once, by one function generated
from all the rules' filters (filter/matcher.py), asked once per header key
of a batch: a rule the packet does not match costs nothing, a rule no packet
of a batch matches is not visited, and a rule every packet of a batch
matches takes the batch as it is.
A rule that may change a packet's bytes says so (Rule.rewrites), and what it
passes on is judged again for the rules after it.

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
from itertools import compress

from divertgui.engine.address import Layer
from divertgui.engine.filter import FilterError, compile_filter
from divertgui.engine.filter.matcher import compile_batch_matcher, compile_matcher
from divertgui.engine.rules.base import Rule, RuleError
from divertgui.engine.rules.registry import rules_from_dicts, rules_to_dicts


def _take_batch(rule: Rule, bit: int, packets: list, masks: list, now_ns: int) -> tuple[list, list] | None:
    """(packets, masks) once `rule` (bit `bit`) took its matching packets of the batch at once,
    through pass_matched or draw_matched; None when it must take them one by one."""
    every = all(mask & bit for mask in set(masks))
    matching = packets if every else [packet for packet, mask in zip(packets, masks) if mask & bit]
    if rule.pass_matched is not None and rule.pass_matched(matching, now_ns):
        rule.counters["matched"] += len(matching)
        return packets, masks
    if rule.draw_matched is None:
        return None
    rule.counters["matched"] += len(matching)
    times = rule.draw_matched(matching, now_ns)
    if not every:
        drawn = iter(times)
        times = [next(drawn) if mask & bit else 1 for mask in masks]
    if max(times, default=0) <= 1:
        return list(compress(packets, times)), list(compress(masks, times))
    # Copies have the bytes and address of their original: its mask is theirs.
    passed, passed_masks = [], []
    copy = rule.copy
    for packet, mask, count in zip(packets, masks, times):
        if count == 1:
            passed.append(packet)
            passed_masks.append(mask)
        elif count:
            passed.append(packet)
            passed.extend([copy(packet) for _ in range(count - 1)])
            passed_masks.extend([mask] * count)
    return passed, passed_masks


class Pipeline:
    def __init__(self, rules=(), seed: int = 0):
        self.seed = seed
        self.rules: list[Rule] = list(rules)
        for index, rule in enumerate(self.rules):
            rule.rng = random.Random(f"{seed}:{index}:{rule.kind}")
        self.received = 0
        self.sent = 0
        self._matcher_key = None
        self._match = None
        self._masks = None

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

    def divert_filter(self, text: str, layer: Layer = Layer.NETWORK) -> str:
        """`text` narrowed to the packets some enabled rule can match: all that a
        handle feeding only this pipeline needs to divert, since the rest would
        pass untouched; "false" when no enabled rule can match at `layer`.
        `text` itself when a rule must see every packet (one that observes what
        it does not match, or matches everything) or when the narrowed filter
        is more than the language allows. At the forward layer every packet is
        outbound (as in WinDivert), so an inbound rule matches none and an
        outbound one is not narrowed by its direction."""
        forward = layer == Layer.NETWORK_FORWARD
        selecting = []
        for rule in self.rules:
            if not rule.enabled or (forward and rule._outbound is False):
                continue
            selecting.append((rule, None if forward else rule._outbound))
        if not selecting:
            return "false"
        if any(rule.observe is not None or (rule._match_all and outbound is None) for rule, outbound in selecting):
            return text
        sides = {True: "outbound", False: "inbound"}
        alternatives = []
        for rule, outbound in selecting:
            selected = "true" if rule._match_all else f"({rule.filter_text})"
            if outbound is not None:
                selected = f"{sides[outbound]} and {selected}"
            alternatives.append(f"({selected})")
        narrowed = f"({text}) and ({' or '.join(alternatives)})"
        try:
            compile_filter(narrowed, layer)
        except FilterError:
            return text
        return narrowed

    # -- moving packets ------------------------------------------------------------

    def _matcher(self):
        """Functions giving the bitmask of the enabled rules a packet matches (bit = rule index):
        (for one packet's bytes and address, for a list of packets)."""
        key = (tuple(self.rules), tuple(rule.enabled for rule in self.rules))
        if key != self._matcher_key:
            self._matcher_key = key
            entries = [(None if rule._match_all else rule.filter, rule._outbound) if rule.enabled else None
                       for rule in self.rules]
            self._match = compile_matcher(entries)
            self._masks = compile_batch_matcher(entries, self._match)
        return self._match, self._masks

    def _run(self, packets: list, start: int, now_ns: int) -> list:
        rules = self.rules
        if start >= len(rules) or not packets:
            return packets
        match, batch_masks = self._matcher()
        masks = batch_masks(packets)
        seen = 0
        for mask in set(masks):
            seen |= mask
        for index in range(start, len(rules)):
            rule = rules[index]
            bit = 1 << index
            observe = rule.observe
            if not rule.enabled or not packets or (not seen & bit and observe is None):
                continue
            if observe is None and (rule.pass_matched is not None or rule.draw_matched is not None):
                taken = _take_batch(rule, bit, packets, masks, now_ns)
                if taken is not None:
                    packets, masks = taken
                    continue
            counters, process, rewrites = rule.counters, rule.process, rule.rewrites
            passed: list = []
            passed_masks: list = []
            for packet, mask in zip(packets, masks):
                if mask & bit:
                    counters["matched"] += 1
                    size = len(passed)
                    before = bytes(packet.buffer) if rewrites else None
                    process(packet, now_ns, passed)
                    same = before is None or before == packet.buffer
                    if same and len(passed) == size + 1 and passed[size] is packet:
                        passed_masks.append(mask)
                        continue
                    # Changed bytes and new packets (copies, RSTs) are judged again by the rules after this one.
                    for made in passed[size:]:
                        again = mask if made is packet and same else match(made.buffer, made.address)
                        passed_masks.append(again)
                        seen |= again
                else:
                    if observe is not None:
                        before = bytes(packet.buffer) if rewrites else None
                        observe(packet)
                        if before is not None and before != packet.buffer:
                            mask = match(packet.buffer, packet.address)
                            seen |= mask
                    passed.append(packet)
                    passed_masks.append(mask)
            packets, masks = passed, passed_masks
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
