"""Refusals of a listening service logged at a bounded rate, so that a user
with no right to the service cannot fill its log by connecting in a loop:
the first REFUSALS_LOGGED of each uid in an INTERVAL are logged one by one,
the rest counted in one line when the interval is over."""

from __future__ import annotations

import time
from typing import Callable

from divertgui.service.peers import who

REFUSALS_LOGGED = 5
INTERVAL = 1.0      # seconds


class RefusalLog:
    def __init__(self, log: Callable[[str], None], clock: Callable[[], float] = time.monotonic):
        self._log = log
        self._clock = clock
        self._intervals: dict[int, list] = {}     # uid -> [start, refusals logged, refusals counted]

    def refused(self, uid: int, line: str) -> None:
        """A refusal of a process of `uid`, said by `line`: logged, or counted."""
        self.tick()
        interval = self._intervals.setdefault(uid, [self._clock(), 0, 0])
        if interval[1] < REFUSALS_LOGGED:
            interval[1] += 1
            self._log(line)
        else:
            interval[2] += 1

    def tick(self) -> None:
        """Count, in one line each, the refusals not logged in the intervals that are over."""
        now = self._clock()
        for uid, (start, _, counted) in list(self._intervals.items()):
            if now - start >= INTERVAL:
                del self._intervals[uid]
                self._say(uid, counted)

    def close(self) -> None:
        """Count the refusals not logged yet (the service is stopping)."""
        for uid, (_, _, counted) in self._intervals.items():
            self._say(uid, counted)
        self._intervals.clear()

    def _say(self, uid: int, counted: int) -> None:
        if counted:
            self._log(f"refused {counted} more connections of {who(uid)} without logging each "
                      f"(at most {REFUSALS_LOGGED} refusals of a user are logged in {INTERVAL:g} s)")
