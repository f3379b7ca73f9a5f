"""The charts draw only what is in view and only when it changed: each drawing re-lays out
and repaints the plots on the GUI thread."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pyqtgraph as pg
import pytest
from PySide6.QtCore import QPointF
from PySide6.QtGui import QColor

from divertgui.engine.store import CaptureStore
from divertgui.models.stats import BIN_NS, PROTOCOLS, TrafficStats
from divertgui.views.charts_panel import PROTOCOL_PENS, ChartsPanel
from tests.unit.test_traffic_rate import add_rows


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


def drawn_at(plot, x: float, y: float):
    """The plot as drawn, and the pixel of its point (`x`, `y`) in it."""
    centre = plot.mapFromScene(plot.getViewBox().mapViewToScene(QPointF(x, y)))
    image = plot.grab().toImage()
    ratio = image.devicePixelRatio()
    return image, round(centre.x() * ratio), round(centre.y() * ratio)


def band_colour(chart, x: float, y: float) -> tuple[int, int, int]:
    """The colour most of a 7x7 patch around the chart's point (`x`, `y`) is drawn in, so that
    a grid line or a curve's edge through it does not count."""
    image, cx, cy = drawn_at(chart.plot, x, y)
    return Counter(image.pixelColor(cx + dx, cy + dy).getRgb()[:3]
                   for dx in range(-3, 4) for dy in range(-3, 4)).most_common(1)[0][0]


def on_white(colour: str, alpha: int) -> tuple[int, int, int]:
    """`colour` as a fill of opacity `alpha` (of 255) shows on the charts' white background."""
    rgb = QColor(colour).getRgb()[:3]
    return tuple(round((value * alpha + 255 * (255 - alpha)) / 255) for value in rgb)


def test_each_stacked_band_shows_its_own_legend_colour_between_its_curve_and_the_one_below(panel):
    store, stats = panel.stats.store, panel.stats
    panel.resize(1400, 800)
    bins = range(8)
    add_rows(store, 0, [b for b in bins for _ in (0, 1)], pid=10)   # 8 packets/s, the bottom band
    add_rows(store, 0, bins, pid=20)                                 # 4 packets/s above it
    stats.update(len(store))
    panel.redraw()
    chart = panel.process_chart
    assert chart.labels[:2] == ["curl (10)", "curl (20)"]
    legend = dict((name, colour) for colour, name in
                  re.findall(r'color:(#[0-9a-f]{6});[^>]*>■</span>&nbsp;([^<]+)', chart.legend.text()))
    alpha = pg.mkBrush(chart.stack.curves[0].opts["brush"]).color().alpha()
    assert 0 < alpha < 255
    tolerance = 6

    def close(actual, expected):
        return all(abs(a - e) <= tolerance for a, e in zip(actual, expected))

    bottom, top = band_colour(chart, 1.0, 3.0), band_colour(chart, 1.0, 10.5)
    assert close(bottom, on_white(legend["curl (10)"], alpha)), (bottom, legend)
    assert close(top, on_white(legend["curl (20)"], alpha)), (top, legend)
    assert close(band_colour(chart, 1.0, 15.0), (255, 255, 255)), "nothing drawn above the stack"


def outline_colours(plot, x: float, y: float) -> list[tuple[int, int, int]]:
    """The colours of the pixels a curve's line draws through the chart's point (`x`, `y`): those
    in the column above and below it that are neither the background nor a band's fill."""
    image, cx, cy = drawn_at(plot, x, y)
    column = [image.pixelColor(cx, cy + dy).getRgb()[:3] for dy in range(-6, 7)]
    fill = Counter(column[7:]).most_common(1)[0][0]
    return [colour for colour in column if colour not in ((255, 255, 255), fill)]


def distance(colour: tuple[int, int, int], name: str) -> int:
    return sum(abs(a - b) for a, b in zip(colour, QColor(name).getRgb()[:3]))


def test_the_stack_outline_is_the_colour_of_the_topmost_protocol_with_traffic_not_other_grey(panel):
    store, stats = panel.stats.store, panel.stats
    panel.resize(1400, 800)
    add_rows(store, 0, [b for b in range(8) for _ in range(4)])     # UDP alone: 16 packets/s
    stats.update(len(store))
    panel.redraw()
    other = panel.packets_stack.curves[PROTOCOLS.index("other")]
    assert other.getData()[1].tolist() == [16.0] * 8, "other's curve lies on UDP's"
    line = outline_colours(panel.packets_plot, 1.0, 16.0)
    assert line, "no line drawn at the top of the stack"
    for colour in line:
        assert distance(colour, PROTOCOL_PENS["UDP"]) < distance(colour, PROTOCOL_PENS["other"]), line
