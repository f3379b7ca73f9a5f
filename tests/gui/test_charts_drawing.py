"""The charts draw only what is in view and only when it changed: each drawing re-lays out
and repaints the plots on the GUI thread."""

from __future__ import annotations

import numpy as np
import pytest

from divertgui.engine.processes import Process
from divertgui.engine.store import CaptureStore, Verdict
from divertgui.models.stats import BIN_NS, TrafficStats
from divertgui.views.charts_panel import ChartsPanel
from tests.unit.test_processes import udp4


def add_rows(store: CaptureStore, host: int, bins, pid: int = 10) -> None:
    """A 48-byte UDP packet of process `pid` on `host` in each of the quarter-second `bins`."""
    process = store.processes.intern(Process(pid, "curl", "root"))
    raw = udp4("10.0.0.1", 1000, "10.0.0.2", 53, b"x" * 20)
    count, stamps = len(bins), np.asarray(bins, np.int64) * BIN_NS
    store.append_received(stamps, stamps, np.ones(count, np.int64),
                          np.zeros(count, np.int64), np.zeros(count, np.int64),
                          np.full(count, int(Verdict.PASSED)), np.full(count, len(raw)), raw * count, process, host)


@pytest.fixture
def panel(qtbot):
    store = CaptureStore()
    stats = TrafficStats(store)
    panel = ChartsPanel(stats)
    qtbot.addWidget(panel)
    panel.show()
    qtbot.waitExposed(panel)
    return panel


def drawn(chart) -> int:
    """How many points the chart's first curve holds."""
    x, _ = chart.stack.curves[0].getData()
    return 0 if x is None else len(x)


def height(panel) -> float:
    return panel.packets_plot.getViewBox().viewRange()[1][1]


def test_only_the_split_chart_in_front_is_drawn_and_the_other_when_it_comes_to_front(panel):
    store, stats = panel.stats.store, panel.stats
    web, db = store.hosts.add("web"), store.hosts.add("db")
    add_rows(store, web, [0, 1, 2])
    add_rows(store, db, [1, 2, 3])
    panel.show_hosts()
    stats.update(len(store))
    panel.redraw()
    assert panel.split_tabs.currentWidget() is panel.host_chart
    assert drawn(panel.host_chart) == 4 and sorted(panel.host_chart.labels[:2]) == ["db", "web"]
    assert drawn(panel.process_chart) == 0 and panel.process_chart.labels == [], "behind its tab: not drawn"
    panel.split_tabs.setCurrentIndex(0)
    panel.redraw()
    assert drawn(panel.process_chart) == 4
    assert panel.process_chart.labels[0].startswith("curl (10)")


def test_nothing_is_drawn_again_until_rows_or_the_time_axis_or_a_control_change(panel):
    store, stats = panel.stats.store, panel.stats
    add_rows(store, 0, [0, 1, 2])
    stats.update(len(store))
    panel.redraw()
    assert panel.updates == 1
    x, y = panel.packets_stack.curves[-1].getData()
    assert x.tolist() == [0.0, 0.25, 0.5] and y.tolist() == [4.0, 4.0, 4.0]
    assert height(panel) == 5, "a round height above the peak"
    panel.redraw()
    panel.redraw()
    assert panel.updates == 1, "the same rows drawn again"
    add_rows(store, 0, [2, 2])
    stats.update(len(store))
    panel.redraw()
    assert panel.updates == 2
    assert panel.packets_stack.curves[-1].getData()[1].tolist() == [4.0, 4.0, 12.0]
    assert height(panel) == 20
    stats.advance_to(4 * BIN_NS)
    panel.redraw()
    assert panel.updates == 3 and len(panel.packets_stack.curves[-1].getData()[0]) == 5
    assert height(panel) == 20, "the same peak keeps the axis as it was"
    panel.split_units.setCurrentText("bytes/s")
    panel.redraw()
    assert panel.updates == 4
    assert panel.process_chart.stack.curves[0].getData()[1].max() == 3 * 48 * 4, "3 rows of 48 bytes in bin 2"


def test_a_closed_panel_draws_nothing_and_catches_up_when_shown(panel):
    store, stats = panel.stats.store, panel.stats
    add_rows(store, 0, [0, 1])
    stats.update(len(store))
    panel.hide()
    panel.redraw()
    assert panel.updates == 0 and drawn(panel.process_chart) == 0
    panel.show()
    panel.redraw()
    assert panel.updates == 1 and drawn(panel.process_chart) == 2
