"""Packets a capture lost, read from its handle's counters, with what each counter means."""

from __future__ import annotations

LOSS_COUNTERS = {
    "overflowed": "the kernel queue was full",
    "lost_messages": "the kernel could not deliver them to this program",
    "sniff_lost": "sniffed copies the kernel could not deliver",
}


def losses(stats: dict) -> dict[str, int]:
    """The loss counters of `stats` that are not zero."""
    return {name: int(stats[name]) for name in LOSS_COUNTERS if int(stats.get(name) or 0) > 0}


def describe(lost: dict[str, int]) -> str:
    """One sentence: how many packets were lost, and why."""
    total = sum(lost.values())
    reasons = "; ".join(f"{name} {count:,}: {LOSS_COUNTERS[name]}" for name, count in lost.items())
    return f"{total:,} packet{'' if total == 1 else 's'} lost so far ({reasons}); they are not in the list."
