"""The status bar's rate: the mean over the last seconds of complete quarter-second bins while
capturing, steady under bursts, and none once the capture stops or for a file's rows."""

from __future__ import annotations

import numpy as np

from divertgui.engine.processes import Process
from divertgui.engine.store import CaptureStore, Verdict
from divertgui.models.stats import BIN_NS, RATE_BINS, RATE_SECONDS, TrafficStats
from tests.unit.test_processes import udp4

RAW = udp4("10.0.0.1", 1000, "10.0.0.2", 53, b"x" * 20)


def add_rows(store: CaptureStore, host: int, bins, pid: int = 10) -> None:
    """A 48-byte UDP packet of process `pid` on `host` in each of the quarter-second `bins`."""
    process = store.processes.intern(Process(pid, "curl", "root"))
    count, stamps = len(bins), np.asarray(bins, np.int64) * BIN_NS
    store.append_received(stamps, stamps, np.ones(count, np.int64),
                          np.zeros(count, np.int64), np.zeros(count, np.int64),
                          np.full(count, int(Verdict.PASSED)), np.full(count, len(RAW)), RAW * count, process, host)


def live_stats() -> TrafficStats:
    stats = TrafficStats(CaptureStore())
    stats.live = True
    return stats


def test_bursts_give_their_mean_over_the_last_seconds_of_complete_bins():
    stats = live_stats()
    # 40 packets in every other quarter second for 4 s: 80 packets a second, in bursts.
    bursts = [b for b in range(0, 16, 2) for _ in range(40)]
    add_rows(stats.store, 0, bursts)
    stats.update(len(stats.store))
    stats.advance_to(16 * BIN_NS)          # bins 0..15 complete, bin 16 filling
    assert stats.rates() == (80.0, 80.0 * len(RAW))
    add_rows(stats.store, 0, [16] * 100)   # the bin still being filled does not count yet
    stats.update(len(stats.store))
    assert stats.rates()[0] == 80.0
    stats.advance_to(17 * BIN_NS)
    assert stats.rates()[0] == (100 + 3 * 40) / RATE_SECONDS


def test_a_young_capture_rates_its_complete_bins_and_idle_seconds_bring_it_to_zero():
    stats = live_stats()
    add_rows(stats.store, 0, [0] * 5)
    stats.update(len(stats.store))
    assert stats.rates() == (0.0, 0.0), "no complete bin yet"
    add_rows(stats.store, 0, [1] * 10 + [2] * 3)
    stats.update(len(stats.store))
    assert stats.rates()[0] == 15 / (2 * BIN_NS / 1e9), "two complete bins, the third filling"
    stats.advance_to((3 + RATE_BINS) * BIN_NS)
    assert stats.rates() == (0.0, 0.0), "the last seconds had no packet"


def test_a_stopped_capture_or_a_file_has_no_rate():
    stats = live_stats()
    add_rows(stats.store, 0, [b for b in range(12) for _ in range(4)])
    stats.update(len(stats.store))
    assert stats.rates()[0] == 16.0
    stats.live = False
    assert stats.rates() == (0.0, 0.0)
    opened = TrafficStats(CaptureStore())
    add_rows(opened.store, 0, [0, 0, 1, 2, 3, 4])
    opened.update(len(opened.store))
    assert opened.rates() == (0.0, 0.0)
