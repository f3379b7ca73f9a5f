"""Out of order: hold a packet back until a few later ones have overtaken it."""

from __future__ import annotations

from divertgui.engine.rules.base import Param, Rule, chance

_MS = 1_000_000


class OutOfOrder(Rule):
    """With `chance` percent a packet is held until 1..`window` later matching
    packets (drawn at random) have passed it, or at most `max_hold_ms` when
    traffic stops."""

    kind = "out_of_order"
    params = {
        "chance": chance(10.0),
        "window": Param(3, 1, 64),
        "max_hold_ms": Param(100.0, 1, 10000),
    }

    carried = ("_held",)

    def setup(self) -> None:
        self._held: list[list] = []     # [packets still to pass it, deadline, packet], oldest first
        self.counters["reordered"] = 0

    def process(self, packet, now_ns: int, out: list) -> None:
        if self.hit(self.chance):
            self.counters["delayed"] += 1
            self.counters["reordered"] += 1
            self._held.append([self.rng.randint(1, self.window), now_ns + int(self.max_hold_ms * _MS), packet])
            return
        out.append(packet)
        if self._held:
            still = []
            for entry in self._held:
                entry[0] -= 1
                if entry[0] <= 0:
                    out.append(entry[2])
                else:
                    still.append(entry)
            self._held = still

    def pass_matched(self, packets, now_ns: int) -> bool:
        return self.chance <= 0 and not self._held

    def due(self, now_ns: int) -> list:
        if not self._held or min(e[1] for e in self._held) > now_ns:
            return []
        ready = [e[2] for e in self._held if e[1] <= now_ns]
        self._held = [e for e in self._held if e[1] > now_ns]
        return ready

    def next_deadline(self) -> int | None:
        return min((e[1] for e in self._held), default=None)

    def release_all(self) -> list:
        ready = [e[2] for e in self._held]
        self._held = []
        return ready

    def held(self) -> int:
        return len(self._held)
