"""Refusals are logged one by one up to a bound per user and interval, the rest counted, none lost."""

import re

from divertgui.service.refusal_log import INTERVAL, REFUSALS_LOGGED, RefusalLog


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def counted(lines: list[str], uid: int) -> int:
    return sum(int(n) for n in re.findall(rf"refused (\d+) more connections of \S* ?\(?uid {uid}\)?", "\n".join(lines)))


def test_a_flood_of_refusals_is_logged_at_a_bounded_rate_and_the_rest_counted():
    lines, clock = [], Clock()
    refusals = RefusalLog(lines.append, clock)
    for second in range(3):
        for _ in range(1000):
            refusals.refused(65534, "refused nobody")
            refusals.refused(4242, "refused uid 4242")
        clock.now += INTERVAL
        refusals.tick()
    assert lines.count("refused nobody") == lines.count("refused uid 4242") == 3 * REFUSALS_LOGGED
    assert counted(lines, 65534) == counted(lines, 4242) == 3 * (1000 - REFUSALS_LOGGED)
    assert len(lines) == 3 * 2 * (REFUSALS_LOGGED + 1)


def test_refusals_below_the_bound_are_all_logged_and_stopping_counts_the_rest():
    lines, clock = [], Clock()
    refusals = RefusalLog(lines.append, clock)
    for _ in range(REFUSALS_LOGGED):
        refusals.refused(4242, "refused")
    refusals.tick()
    assert lines == ["refused"] * REFUSALS_LOGGED
    refusals.refused(4242, "refused")
    refusals.refused(4242, "refused")
    refusals.close()
    assert counted(lines, 4242) == 2 and len(lines) == REFUSALS_LOGGED + 1
