"""Throttle: now and then hold everything for a time frame, then let it all go at once."""

from __future__ import annotations

from divertgui.engine.rules.base import Param, Rule, chance

_MS = 1_000_000


class Throttle(Rule):
    """With `chance` percent a matching packet opens a frame of `frame_ms`;
    packets that match during the frame are held (or, with drop_throttled,
    dropped) and released together when it closes, or as soon as
    `max_packets` are held."""

    kind = "throttle"
    params = {
        "frame_ms": Param(30.0, 0, 1000),
        "chance": chance(10.0),
        "drop_throttled": Param(False),
        "max_packets": Param(1000, 1, 100000),
    }

    # An open frame closes when it was due to; a new frame_ms applies to the next frame.
    carried = ("_until", "_held")

    def setup(self) -> None:
        self._until: int | None = None
        self._held: list = []

    def process(self, packet, now_ns: int, out: list) -> None:
        if self._until is not None and now_ns >= self._until:
            out.extend(self._close_frame())
        if self._until is None and self.frame_ms > 0 and self.hit(self.chance):
            self._until = now_ns + int(self.frame_ms * _MS)
        if self._until is None:
            out.append(packet)
        elif self.drop_throttled:
            self.counters["dropped"] += 1
        else:
            self.counters["delayed"] += 1
            self._held.append(packet)
            if len(self._held) >= self.max_packets:
                out.extend(self._close_frame())

    def pass_matched(self, packets, now_ns: int) -> bool:
        return self._until is None and (self.frame_ms <= 0 or self.chance <= 0)

    def _close_frame(self) -> list:
        self._until = None
        held, self._held = self._held, []
        return held

    def due(self, now_ns: int) -> list:
        if self._until is not None and now_ns >= self._until:
            return self._close_frame()
        return []

    def next_deadline(self) -> int | None:
        return self._until

    def release_all(self) -> list:
        return self._close_frame()

    def held(self) -> int:
        return len(self._held)
