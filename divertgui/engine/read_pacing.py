"""When a loop that diverts packets reads its queue again: at once, or after letting a batch gather.

Part of each read's cost does not depend on what it brings (a wake-up, a
read and a verdict system call, the Python around them). Under a flood, a
reader that goes back to the queue as soon as it is done finds only what
came in the meantime: 9 packets a read on average at 200,000 packets/s on
a 2-core machine. After a read that shows a high arrival rate, waiting
until about GATHER_TARGET packets have come (never longer than the most
wait) makes the reads few and large, as a network card's interrupt
moderation does. A read that shows less than GATHER_TARGET packets per
most wait is followed by the next one at once, so light and bursty
traffic (a ping, an interactive connection) gets no added delay.

    pacing = ReadPacing(most_wait=0.001)
    while ...:
        count = handle.pass_batch(255, timeout)
        time.sleep(pacing.wait_after(count, full=count == 255))
"""

from __future__ import annotations

import math
import time

GATHER_TARGET = 32          # packets a paced read aims to find
BUSY_READ = 4               # fewer packets than this never make a reader wait
DEFAULT_MOST_WAIT = 0.001   # seconds


def most_wait_from_microseconds(text: str) -> float:
    """The most wait given in microseconds (a command-line value), in seconds; ValueError if not 0..100000."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 <= value <= 100_000:
        raise ValueError(f"{text!r} is not a number of microseconds from 0 to 100000")
    return value / 1e6


class ReadPacing:
    def __init__(self, most_wait: float = DEFAULT_MOST_WAIT, clock=time.monotonic):
        self.most_wait, self._clock = most_wait, clock
        self._last_read = clock()

    def wait_after(self, count: int, full: bool = False) -> float:
        """Seconds to wait before the next read, after one that brought `count` packets
        (`full`: as many as it asked for, so more are waiting)."""
        now = self._clock()
        since, self._last_read = now - self._last_read, now
        if full or count < BUSY_READ or self.most_wait <= 0:
            return 0.0
        # The read brought what came in `since`: at that rate, GATHER_TARGET packets take this long.
        gather = GATHER_TARGET * since / count
        return gather if gather <= self.most_wait else 0.0
