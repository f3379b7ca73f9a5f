"""ReadPacing: a reader of a busy queue waits for a batch to gather; light traffic is read at once."""

import math

import pytest

from divertgui.engine.read_pacing import BUSY_READ, GATHER_TARGET, ReadPacing, most_wait_from_microseconds


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def pacing_after(seconds: float, count: int, most_wait: float = 0.001, full: bool = False) -> float:
    clock = Clock()
    pacing = ReadPacing(most_wait, clock)
    clock.now += seconds
    return pacing.wait_after(count, full)


def test_a_flood_waits_until_the_target_would_have_come():
    # 16 packets in 50 us: 320,000 packets/s, so the target takes 100 us.
    assert pacing_after(50e-6, 16) == pytest.approx(GATHER_TARGET * 50e-6 / 16)


def test_the_wait_follows_the_rate_read_by_read():
    clock = Clock()
    pacing = ReadPacing(0.001, clock)
    clock.now += 100e-6
    first = pacing.wait_after(8)
    clock.now += first + 20e-6
    second = pacing.wait_after(GATHER_TARGET)
    assert first == pytest.approx(400e-6)
    # The second read found the target after the wait: the rate held, so the wait stays about the same.
    assert second == pytest.approx(first + 20e-6)


def test_few_packets_are_read_again_at_once():
    assert pacing_after(1e-6, BUSY_READ - 1) == 0.0
    assert pacing_after(1e-6, 0) == 0.0


def test_traffic_too_slow_to_gather_the_target_in_the_most_wait_gets_no_wait():
    # 8 packets in 10 ms: the target would take 40 ms.
    assert pacing_after(0.010, 8) == 0.0
    assert pacing_after(0.010, 8, most_wait=0.050) == pytest.approx(0.040)


def test_a_full_read_means_more_are_waiting():
    assert pacing_after(50e-6, 64, full=True) == 0.0


def test_no_most_wait_reads_at_once():
    assert pacing_after(50e-6, 16, most_wait=0.0) == 0.0


@pytest.mark.parametrize("text, seconds", [("0", 0.0), ("1000", 0.001), ("250.5", 250.5e-6), ("100000", 0.1)])
def test_microseconds_from_the_command_line(text, seconds):
    assert math.isclose(most_wait_from_microseconds(text), seconds)


@pytest.mark.parametrize("text", ["nan", "inf", "-1", "100001", "fast", ""])
def test_bad_microseconds_say_what_is_wrong(text):
    with pytest.raises(ValueError, match="microseconds from 0 to 100000"):
        most_wait_from_microseconds(text)
