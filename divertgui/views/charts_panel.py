"""Live charts over TrafficStats: packets/s and bytes/s stacked by protocol,
inbound vs outbound, the top processes, the top conversations, and the
distribution of the delays lag rules gave. Pause freezes the picture; the
mouse zooms and pans; "Follow" returns to the live edge."""

from __future__ import annotations

import html
import math
import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QPainterPath
from PySide6.QtWidgets import (QCheckBox, QComboBox, QGraphicsPathItem, QGridLayout, QHBoxLayout, QHeaderView, QLabel,
                               QPushButton, QSpinBox, QTableWidget, QTableWidgetItem, QTabWidget, QVBoxLayout, QWidget)

from divertgui.models.stats import PROTOCOLS

PROTOCOL_PENS = {
    "TCP": "#6a5acd",
    "UDP": "#2b8cc4",
    "ICMP": "#c0399b",
    "ICMPv6": "#e57ac4",
    "other": "#8c8c8c",
}
INBOUND_PEN = "#1b9e77"
OUTBOUND_PEN = "#d95f02"
DELAY_PEN = "#7b3294"
NO_DELAYS = "No lag rule has delayed a packet yet"
NO_PROCESSES = "no local process in view"
NO_HOSTS = "no packet in view"
# The top keys of a split chart (processes), each keeping its colour while it stays on the chart.
TOP_KEYS = 5
KEY_PENS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#17becf", "#e377c2", "#bcbd22")
OTHER_PEN = PROTOCOL_PENS["other"]
LEGEND_WIDTH = 170


# The top conversations' totals while capturing: each changed cell repaints the table.
CONVERSATIONS_INTERVAL_S = 1.0


def round_up(value: float) -> float:
    """The smallest of 1, 2 and 5 times a power of ten that is at least `value` (> 0)."""
    power = 10.0 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value * (1 - 1e-12))


# Below this a chart shows no tick numbers: the dock gives up room to the list first.
PLOT_MIN_HEIGHT = 120


def _plot(title: str, units: str) -> pg.PlotWidget:
    plot = pg.PlotWidget(background="w")
    plot.setMinimumHeight(PLOT_MIN_HEIGHT)
    plot.setTitle(title, color="#333333", size="9pt")
    plot.showGrid(x=True, y=True, alpha=0.25)
    plot.setLabel("bottom", "seconds since start")
    plot.setLabel("left", units=units)
    left = plot.getAxis("left")
    left.setStyle(showValues=True, autoExpandTextSpace=True)
    left.setWidth(48)
    plot.setMouseEnabled(x=True, y=False)
    plot.getPlotItem().getViewBox().setLimits(yMin=0)
    return plot


def legend_html(entries, separator: str = "&nbsp;&nbsp;") -> str:
    """A legend beside the charts rather than over them, so that no legend covers data."""
    return separator.join(f'<span style="color:{colour}; font-size:14px;">■</span>&nbsp;{name}'
                          for name, colour in entries)


def _fill(colour: str):
    fill = pg.mkColor(colour)
    fill.setAlpha(120)
    return fill


def _curve(plot: pg.PlotWidget, name: str, pen, **options) -> pg.PlotCurveItem:
    """A bare curve on `plot`: a PlotDataItem around it would cost as much again per setData,
    for features (symbols, per-item downsampling) these charts do not use."""
    curve = pg.PlotCurveItem(name=name, pen=pen, **options)
    plot.addItem(curve)
    return curve


class StackedPlot:
    """Series stacked on one another: each series' curve is the running sum up to it, and its
    band fills from that curve down to the curve of the series below it (the first down to
    zero), so that no band covers another and each shows its own colour."""

    def __init__(self, plot: pg.PlotWidget, names, colours):
        self.plot = plot
        self.curves = []
        self.colours = list(colours)
        # Where bands above a series are empty their curves lie on its curve: each curve is drawn
        # over those above it, so that the outline shows the topmost series with traffic there,
        # not the top series' colour (grey "other") over traffic it has none of.
        for i, (name, colour) in enumerate(zip(names, colours)):
            curve = _curve(plot, name, pg.mkPen(colour, width=1.5))
            curve.setZValue(1 + len(colours) - i)
            self.curves.append(curve)
        self.curves[0].setFillLevel(0)
        self.curves[0].setBrush(_fill(self.colours[0]))
        # bands[i] is the band of curves[i + 1], down to curves[i]; under every curve's line.
        # Its outline is laid from the sums themselves: pyqtgraph's FillBetweenItem, from the two
        # curves' paths, costs ten times as much a redraw and twice as much a repaint.
        self.bands = []
        for colour in self.colours[1:]:
            band = QGraphicsPathItem()
            band.setPen(pg.mkPen(None))
            band.setBrush(_fill(colour))
            band.setZValue(0)
            plot.addItem(band)
            self.bands.append(band)

    def set_data(self, x: np.ndarray, series: np.ndarray) -> None:
        """One row of `series` per curve from the first; curves beyond its rows are emptied."""
        totals = np.cumsum(series, axis=0)
        for curve, y in zip(self.curves, totals):
            curve.setData(x, y, skipFiniteCheck=True)
        for curve in self.curves[len(totals):]:
            # An emptied curve stays empty without a new setData: each one re-lays out its plot.
            if curve.xData is not None and len(curve.xData):
                curve.setData([], [])
        there_and_back = np.concatenate([x, x[::-1]])
        for band, lower, upper in zip(self.bands, totals, totals[1:]):
            band.setPath(pg.arrayToQPath(there_and_back, np.concatenate([upper, lower[::-1]]), connect="all"))
        for band in self.bands[max(0, len(totals) - 1):]:
            if not band.path().isEmpty():
                band.setPath(QPainterPath())

    def set_colours(self, colours) -> None:
        for i, colour in enumerate(colours):
            if self.colours[i] != colour:
                self.colours[i] = colour
                self.curves[i].setPen(pg.mkPen(colour, width=1.5))
                (self.bands[i - 1] if i else self.curves[0]).setBrush(_fill(colour))


SPLIT_UNITS = {"packets/s": "pkt/s", "bytes/s": "B/s"}


def split_units(parent) -> QComboBox:
    """The choice of packets/s or bytes/s for the split charts; the panel places it among its
    controls, leaving the height beside each chart to its legend."""
    units = QComboBox(parent)
    units.setObjectName("split_units")
    units.addItems(list(SPLIT_UNITS))
    return units


class SplitChart(QWidget):
    """Packets/s or bytes/s (as `units` says) stacked by the top keys of one of TrafficStats'
    splits (processes, hosts), everything else as "other", with a legend of its own since the
    keys change with the traffic."""

    def __init__(self, stats, split: str, title: str, none_text: str, units: QComboBox, parent=None):
        super().__init__(parent)
        self.stats = stats
        self.split = split
        self.none_text = none_text
        self.plot = _plot(title, "pkt/s")
        self.stack = StackedPlot(self.plot, [""] * (TOP_KEYS + 1), [OTHER_PEN] * (TOP_KEYS + 1))
        self.units = units
        units.currentTextChanged.connect(lambda text: self.plot.setLabel("left", units=SPLIT_UNITS[text]))
        self.legend = QLabel(self)
        self.legend.setObjectName(f"{split}_legend")
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.legend.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.legend.setMaximumWidth(LEGEND_WIDTH)
        self.labels: list[str] = []
        self._colours: dict[int, str] = {}
        # The legend beside the chart, one entry a line: the keys come and go.
        self.legend.setContentsMargins(0, 4, 0, 0)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.legend)

    def draw(self, seconds: float) -> float:
        """Draws the last `seconds`; returns the highest stacked value drawn."""
        window = self.stats.split_window(self.split, seconds, TOP_KEYS)
        series = window.packets if self.units.currentIndex() == 0 else window.bytes
        colours = self._colours_of(window.keys.tolist())
        self.stack.set_colours(colours)
        self.stack.set_data(window.x, series)
        if window.labels != self.labels:
            self.labels = window.labels
            entries = [(html.escape(label), colour) for label, colour in zip(window.labels, colours)]
            note = "" if len(window.keys) else f"<br><i>{html.escape(self.none_text)}</i>"
            self.legend.setText(legend_html(entries, "<br>") + note)
            self.legend.setToolTip(legend_html(entries, "<br>"))
        return float(series.sum(axis=0).max()) if series.size else 0.0

    def _colours_of(self, keys: list[int]) -> list[str]:
        """A colour for each key and grey for the curves left over: a key keeps the colour it had
        while it stays on the chart; a new key takes one no key on the chart has."""
        kept = {key: self._colours[key] for key in keys if key in self._colours}
        free = [colour for colour in KEY_PENS if colour not in kept.values()]
        for key in keys:
            if key not in kept:
                kept[key] = free.pop(0)
        self._colours = kept
        return [kept[key] for key in keys] + [OTHER_PEN]


class ChartsPanel(QWidget):
    def __init__(self, stats, parent=None, delays=None):
        super().__init__(parent)
        self.stats = stats
        self.delays = delays
        self.paused = False
        self.updates = 0
        self.packets_plot = _plot("Packets/s by protocol", "pkt/s")
        self.bytes_plot = _plot("Bytes/s by protocol", "B/s")
        # Its legend in its title: the controls above the charts keep to what fits a laptop's width.
        self.direction_plot = _plot(legend_html([("inbound", INBOUND_PEN)]) + " vs "
                                    + legend_html([("outbound", OUTBOUND_PEN)]), "pkt/s")
        colours = [PROTOCOL_PENS[name] for name in PROTOCOLS]
        self.packets_stack = StackedPlot(self.packets_plot, PROTOCOLS, colours)
        self.bytes_stack = StackedPlot(self.bytes_plot, PROTOCOLS, colours)
        self.inbound_curve = _curve(self.direction_plot, "inbound", pg.mkPen(INBOUND_PEN, width=2))
        self.outbound_curve = _curve(self.direction_plot, "outbound", pg.mkPen(OUTBOUND_PEN, width=2))
        self.split_units = split_units(self)
        self.process_chart = SplitChart(stats, "process", "Traffic by process", NO_PROCESSES, self.split_units, self)
        self.host_chart = SplitChart(stats, "host", "Traffic by host", NO_HOSTS, self.split_units, self)
        # Side by side with the processes' once the window has several hosts (show_hosts).
        self.split_tabs = QTabWidget(self)
        self.split_tabs.setObjectName("split_tabs")
        self.split_tabs.setDocumentMode(True)
        self.split_tabs.addTab(self.process_chart, "By process")
        self.split_tabs.addTab(self.host_chart, "By host")
        self.split_tabs.setTabVisible(1, False)
        self.split_tabs.tabBar().setVisible(False)
        self.bytes_plot.setXLink(self.packets_plot)
        self.direction_plot.setXLink(self.packets_plot)
        self.process_chart.plot.setXLink(self.packets_plot)
        self.host_chart.plot.setXLink(self.packets_plot)
        self.delay_plot = _plot("Lag delays, recent packets", "packets")
        self.delay_plot.setLabel("bottom", "delay (ms)")
        self.delay_plot.setMouseEnabled(x=False, y=False)
        fill = pg.mkColor(DELAY_PEN)
        fill.setAlpha(120)
        self.delay_curve = self.delay_plot.plot([0, 1], [0], stepMode="center", fillLevel=0, brush=fill,
                                                pen=pg.mkPen(DELAY_PEN, width=1.5))
        self.delay_summary = QLabel(self)
        self.delay_summary.setObjectName("delay_summary")
        self.delay_summary.setText(NO_DELAYS)
        self.delay_summary.setWordWrap(True)
        self.delay_summary.setMaximumWidth(LEGEND_WIDTH)
        self.delay_summary.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.delay_shown = 0

        self.conversations = QTableWidget(0, 3, self)
        self.conversations.setHorizontalHeaderLabels(["Top conversations", "Bytes", "Packets"])
        self.conversations.verticalHeader().hide()
        self.conversations.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in (1, 2):
            self.conversations.horizontalHeader().setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.conversations.setWordWrap(False)
        self.conversations.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.conversations.setAlternatingRowColors(True)

        self.pause_box = QCheckBox("Pause", self)
        self.pause_box.toggled.connect(self.set_paused)
        self.follow_button = QPushButton("Follow live", self)
        self.follow_button.setToolTip("Reset zoom and follow the newest seconds")
        self.follow_button.clicked.connect(self.follow)
        self.window_spin = QSpinBox(self)
        self.window_spin.setRange(10, 3600)
        self.window_spin.setValue(60)
        self.window_spin.setPrefix("last ")
        self.window_spin.setSuffix(" s")
        self.window_spin.setToolTip("How many seconds of traffic the charts show")
        self.following = True
        self._x_range = None
        # What the charts show was drawn from (see _drawn_from): the same again draws nothing.
        self._drawn: tuple | None = None
        self._conversations_at = 0.0
        for plot in self.time_plots():
            plot.getPlotItem().getViewBox().sigRangeChangedManually.connect(self._user_zoomed)

        controls = QHBoxLayout()
        legend = QLabel(legend_html([(name, PROTOCOL_PENS[name]) for name in PROTOCOLS]), self)
        legend.setTextFormat(Qt.TextFormat.RichText)
        controls.addWidget(legend)
        controls.addStretch(1)
        self.split_units_label = QLabel("By process in", self)
        controls.addWidget(self.split_units_label)
        controls.addWidget(self.split_units)
        controls.addWidget(self.window_spin)
        controls.addWidget(self.follow_button)
        controls.addWidget(self.pause_box)
        grid = QGridLayout()
        grid.addWidget(self.packets_plot, 0, 0)
        grid.addWidget(self.bytes_plot, 0, 1)
        grid.addWidget(self.split_tabs, 0, 2)
        grid.addWidget(self.direction_plot, 1, 0)
        grid.addWidget(self.conversations, 1, 1, 1, 1 if self.delays is not None else 2)
        # Its figures beside it, as the per-process chart has its legend.
        delay_row = QHBoxLayout()
        delay_row.setSpacing(4)
        delay_row.addWidget(self.delay_plot, 1)
        delay_row.addWidget(self.delay_summary)
        grid.addLayout(delay_row, 1, 2)
        # The last column holds a chart and its legend: a larger share leaves its chart as wide
        # as the others.
        for column, stretch in enumerate((3, 3, 4)):
            grid.setColumnStretch(column, stretch)
        self.delay_plot.setVisible(self.delays is not None)
        self.delay_summary.setVisible(self.delays is not None)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(controls)
        layout.addLayout(grid, 1)

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        if self.pause_box.isChecked() != paused:
            self.pause_box.setChecked(paused)

    def show_hosts(self) -> None:
        """The window has several hosts: their chart appears, in front of the processes'."""
        if not self.split_tabs.isTabVisible(1):
            self.split_tabs.setTabVisible(1, True)
            self.split_tabs.tabBar().setVisible(True)
            self.split_units_label.setText("By process and host in")
            self.split_tabs.setCurrentIndex(1)

    def time_plots(self) -> tuple[pg.PlotWidget, ...]:
        """The charts over time, which share their time axis."""
        return self.packets_plot, self.bytes_plot, self.direction_plot, self.process_chart.plot, self.host_chart.plot

    def _user_zoomed(self, *_):
        self.following = False

    def follow(self) -> None:
        self.following = True
        self._x_range = None
        # What the charts show was drawn from (see _drawn_from): the same again draws nothing.
        self._drawn: tuple | None = None
        for plot in self.time_plots():
            plot.enableAutoRange(y=True)
        self.redraw()

    def _follow_x(self, x: np.ndarray) -> None:
        # The live edge moves every redraw; moving the x range with it would
        # re-lay out and repaint every axis each time. The range moves in
        # steps of a tenth of the window instead, so the axes change rarely.
        window = float(self.window_spin.value())
        step = window / 10
        end = (math.floor(float(x[-1]) / step) + 1) * step if len(x) else step
        wanted = (max(0.0, end - window), max(end, window / 10))
        if wanted != self._x_range:
            self._x_range = wanted
            self.packets_plot.setXRange(*wanted, padding=0)

    @staticmethod
    def _fit_height(plot: pg.PlotWidget, top: float) -> None:
        # Re-ranging re-lays out the axes: the height is a round number (1, 2 or 5 times a
        # power of ten) and changes only when the data leaves it or fills less than a third.
        # Auto-range would measure every curve after each setData.
        view = plot.getViewBox()
        _, current = view.viewRange()[1]
        if view.autoRangeEnabled()[1] or not current / 3 <= top <= current:
            plot.setYRange(0, round_up(top), padding=0)

    def split_chart(self) -> SplitChart:
        """The split chart in front; the one behind its tab is not drawn."""
        return self.split_tabs.currentWidget()

    def _drawn_from(self, seconds: float) -> tuple:
        """Everything a redraw depends on: the rows taken in, the time axis, the controls."""
        stats = self.stats
        return (stats.generation, stats.processed, stats.bins, stats.live, seconds, self.following,
                self.split_units.currentIndex(), self.split_tabs.currentIndex())

    def redraw(self) -> None:
        """Draws the current arrays; called by a timer (>= 4 per second). Draws nothing while
        paused, while the panel is closed, or when nothing it shows has changed since the last
        redraw: each drawing re-lays out and repaints the plots, the GUI thread's longest work
        after the packet list's."""
        if self.paused or not self.isVisibleTo(self.window()):
            return
        seconds = self.window_spin.value() if self.following else max(self.stats.seconds, 1.0)
        drawn = self._drawn_from(seconds)
        if drawn == self._drawn:
            self._draw_delays()
            return
        self._drawn = drawn
        x, packets, size, inbound, outbound = self.stats.window(seconds)
        split = self.split_chart()
        split_peak = split.draw(seconds)
        self.packets_stack.set_data(x, packets)
        self.bytes_stack.set_data(x, size)
        self.inbound_curve.setData(x, inbound, skipFiniteCheck=True)
        self.outbound_curve.setData(x, outbound, skipFiniteCheck=True)
        if self.following:
            self._follow_x(x)
        if self.following and len(x):
            # Rates read against zero; a bare auto-range would magnify noise.
            for plot, peak in ((self.packets_plot, packets.sum(axis=0).max()),
                               (self.bytes_plot, size.sum(axis=0).max()),
                               (self.direction_plot, max(inbound.max(), outbound.max())),
                               (split.plot, split_peak)):
                self._fit_height(plot, max(1.0, float(peak)) * 1.15)
        now = time.monotonic()
        if not self.stats.live or now - self._conversations_at >= CONVERSATIONS_INTERVAL_S:
            self._conversations_at = now
            self._show_conversations(self.stats.top_conversations(8))
        self._draw_delays()
        self.updates += 1

    def _show_conversations(self, top) -> None:
        # Only cells whose text changed are touched: each change repaints the table.
        table = self.conversations
        if table.rowCount() != len(top):
            table.setRowCount(len(top))
        for row, (label, size_bytes, count) in enumerate(top):
            for column, text in enumerate((label, f"{size_bytes:,}", f"{count:,}")):
                item = table.item(row, column)
                if item is None:
                    item = QTableWidgetItem(text)
                    if column:
                        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                    table.setItem(row, column, item)
                elif item.text() != text:
                    item.setText(text)

    def _draw_delays(self) -> None:
        if self.delays is None or self.delays.total == self.delay_shown:
            return
        self.delay_shown = self.delays.total
        edges, counts = self.delays.histogram()
        if not len(counts):
            self.delay_curve.setData([0, 1], [0])
            self.delay_summary.setText(NO_DELAYS)
            return
        self.delay_curve.setData(edges, counts)
        self.delay_summary.setText(f"{len(self.delays):,} packets\np50 {self.delays.percentile(50):.1f} ms\n"
                                   f"p99 {self.delays.percentile(99):.1f} ms")
