"""Packets a capture lost, read from its handle's counters (Divert.stats()), with what each counter means.

Lost: diverted packets the kernel queue had no room for or could not deliver
(`overflowed`), packets that waited for a reader longer than QUEUE_TIME
(`expired`), and sniffed copies the kernel could not deliver (`sniff_lost`).
Also lost: received packets an edit made too large to send, which were
dropped (`send_failed`, counted by the rules runner and the capture session).
Offered: the packets lost before reaching the reader plus those that reached
it (`diverted`, `sniffed`).
"""

from __future__ import annotations

from typing import NamedTuple

LOSS_COUNTERS = {
    "overflowed": "the kernel queue was full, or could not deliver them to this program",
    "expired": "they waited for this program longer than QUEUE_TIME",
    "sniff_lost": "sniffed copies the kernel could not deliver",
    "lost_with_worker": "a worker process died while they waited in its queue",
    "dropped_without_worker": "their worker was being restarted and the handle does not fail open",
    "send_failed": "an edit made them too large to send, so they were dropped",
}
# Counted among the packets that reached the reader (`diverted`) too.
_ALSO_DIVERTED = ("send_failed",)


def losses(stats: dict) -> dict[str, int]:
    """The loss counters of `stats` that are not zero."""
    counts = {name: int(stats.get(name) or 0) for name in LOSS_COUNTERS}
    # The kernel counts a message it could not deliver in `overflowed` too; the
    # reader's own count of them stands in when the kernel's table cannot be read.
    counts["overflowed"] = max(counts["overflowed"], int(stats.get("lost_messages") or 0))
    return {name: count for name, count in counts.items() if count > 0}


def describe(lost: dict[str, int]) -> str:
    """One sentence: how many packets were lost, and why."""
    total = sum(lost.values())
    reasons = "; ".join(f"{name} {count:,}: {LOSS_COUNTERS[name]}" for name, count in lost.items())
    return f"{total:,} packet{'' if total == 1 else 's'} lost so far ({reasons}); they are not in the list."


class Loss(NamedTuple):
    lost: int
    offered: int
    parts: dict          # losses(): counter -> count, the counters that are not zero

    @property
    def percent(self) -> float:
        return 100.0 * self.lost / self.offered if self.offered else 0.0

    def percent_text(self) -> str:
        """The share lost, never rounded down to a reassuring 0.0 %."""
        percent = self.percent
        return "< 0.1 %" if 0 < percent < 0.1 else f"{percent:.1f} %"

    def parts_text(self) -> str:
        return ", ".join(f"{name} {count}" for name, count in self.parts.items())


def loss_of(stats: dict) -> Loss:
    parts = losses(stats)
    lost = sum(parts.values())
    arrived = lost - sum(parts.get(name, 0) for name in _ALSO_DIVERTED)
    return Loss(lost, arrived + int(stats.get("diverted") or 0) + int(stats.get("sniffed") or 0), parts)


class LossWatch:
    """Says when the loss has grown: `news(stats)` gives the Loss and how many
    packets were lost since the last time it answered, or None when none were."""

    def __init__(self):
        self.reported = 0

    def news(self, stats: dict) -> tuple[Loss, int] | None:
        loss = loss_of(stats)
        new = loss.lost - self.reported
        if new <= 0:
            return None
        self.reported = loss.lost
        return loss, new
