"""The status bar's rate on the demo's traffic: steady, the rate the rows' own times give, and
gone once the capture stops or the rows come from a file."""

from __future__ import annotations

import numpy as np

from divertgui.engine import pcapng
from divertgui.engine.address import Address
from divertgui.models.stats import BIN_NS, RATE_BINS
from tests.gui.conftest import start_demo
from tests.gui.test_reopen_and_live_state import RECORDED_START_NS, udp_packet


def rate_label(window):
    return window.status_line.labels["rate"]


def shown_rate(window) -> float:
    return float(rate_label(window).text().split(" pkt/s")[0].replace(",", ""))


def test_the_rate_is_the_rows_of_the_last_seconds_and_near_the_captures_mean(qtbot, workbench):
    window = workbench.window
    start_demo(qtbot, workbench, rows=40)
    stats = window.stats
    qtbot.waitUntil(lambda: stats.bins > RATE_BINS + 1 and stats.live, timeout=10000)
    # Between two ticks: the rows taken in so far and the bins stay as they are.
    packets_per_s, _ = stats.rates()
    stamps = np.asarray(workbench.store.column("timestamp", 0, stats.processed), np.int64)
    end = stats.start_ns + (stats.bins - 1) * BIN_NS
    in_window = np.count_nonzero((stamps >= end - RATE_BINS * BIN_NS) & (stamps < end))
    assert packets_per_s == in_window / (RATE_BINS * BIN_NS / 1e9)
    mean = (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1e9)
    assert mean / 2 <= packets_per_s <= mean * 2, (packets_per_s, mean)


def test_the_rate_is_shown_while_capturing_and_not_while_paused_or_once_stopped(qtbot, workbench):
    window = workbench.window
    start_demo(qtbot, workbench, rows=40)
    qtbot.waitUntil(lambda: rate_label(window).isVisible() and shown_rate(window) > 0, timeout=10000)
    assert shown_rate(window) == round(window.stats.rates()[0])
    window.set_paused(True)
    qtbot.waitUntil(lambda: window.paused, timeout=5000)
    assert not rate_label(window).isVisible(), "paused: no row is added, so no rate of them"
    window.set_paused(False)
    qtbot.waitUntil(lambda: not window.paused and rate_label(window).isVisible(), timeout=5000)
    window.stop_capture()
    qtbot.waitUntil(lambda: not window.running, timeout=5000)
    assert not rate_label(window).isVisible()
    qtbot.waitUntil(lambda: not window.stats.live, timeout=2000)
    assert window.stats.rates() == (0.0, 0.0)


def test_a_file_opened_during_a_capture_shows_no_rate(qtbot, workbench, tmp_path):
    window = workbench.window
    start_demo(qtbot, workbench, rows=40)
    qtbot.waitUntil(lambda: shown_rate(window) > 0, timeout=10000)
    path = tmp_path / "six.pcapng"
    pcapng.write_capture(path, [(udp_packet(), Address(outbound=True), RECORDED_START_NS + i * 100_000_000)
                                for i in range(6)])
    window.files.open_capture(str(path))
    qtbot.waitUntil(lambda: not window.running and window.count == 6, timeout=10000)
    assert window.status_line.labels["state"].text() == "○ file six.pcapng"
    assert not rate_label(window).isVisible()
    qtbot.waitUntil(lambda: window.stats.total_packets == 6, timeout=5000)
    assert window.stats.rates() == (0.0, 0.0)
