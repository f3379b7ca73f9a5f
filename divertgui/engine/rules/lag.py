"""Lag: hold each packet for a fixed delay plus jitter, separately per direction."""

from __future__ import annotations

import collections
import heapq
import itertools

from divertgui.engine.rules.base import Param, Rule

_MS = 1_000_000
RECENT = 4096


class Lag(Rule):
    """Delay = inbound_ms or outbound_ms, plus jitter drawn from +-jitter_ms (uniform)
    or a normal law of that standard deviation; never below zero.

    Packets may overtake one another when jitter is on, as on a real path,
    unless keep_order is set (each leaves no earlier than the one before it).
    """

    kind = "lag"
    params = {
        "inbound_ms": Param(50.0, 0, 15000),
        "outbound_ms": Param(50.0, 0, 15000),
        "jitter_ms": Param(0.0, 0, 15000),
        "distribution": Param("uniform", choices=("uniform", "normal")),
        "keep_order": Param(False),
    }

    # A new delay applies to packets arriving from then on; held ones leave when they were due.
    carried = ("_heap", "_order", "_last_release", "recent_delays_ms")

    def setup(self) -> None:
        self._heap: list = []
        self._order = itertools.count()
        self._last_release = {True: 0, False: 0}
        # The delays given to the latest packets, in ms: what a delay chart plots.
        self.recent_delays_ms: collections.deque = collections.deque(maxlen=RECENT)

    def _delay_ns(self, outbound: bool) -> int:
        delay = self.outbound_ms if outbound else self.inbound_ms
        if self.jitter_ms:
            if self.distribution == "normal":
                delay += self.rng.gauss(0.0, self.jitter_ms)
            else:
                delay += self.rng.uniform(-self.jitter_ms, self.jitter_ms)
        return max(0, int(delay * _MS))

    def process(self, packet, now_ns: int, out: list) -> None:
        outbound = packet.address.outbound
        delay = self._delay_ns(outbound)
        release = now_ns + delay
        if self.keep_order:
            release = max(release, self._last_release[outbound])
            self._last_release[outbound] = release
        self.recent_delays_ms.append((release - now_ns) / _MS)
        if release <= now_ns and not self._heap:
            out.append(packet)
            return
        self.counters["delayed"] += 1
        heapq.heappush(self._heap, (release, next(self._order), packet))

    def pass_matched(self, packets, now_ns: int) -> bool:
        if self._heap or self.keep_order or self.jitter_ms or self.inbound_ms > 0 or self.outbound_ms > 0:
            return False
        self.recent_delays_ms.extend([0.0] * len(packets))
        return True

    def due(self, now_ns: int) -> list:
        heap, ready = self._heap, []
        while heap and heap[0][0] <= now_ns:
            ready.append(heapq.heappop(heap)[2])
        return ready

    def next_deadline(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def release_all(self) -> list:
        ready = [entry[2] for entry in sorted(self._heap)]
        self._heap.clear()
        return ready

    def held(self) -> int:
        return len(self._heap)
