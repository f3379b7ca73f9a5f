"""The workbench window: capture toolbar, display filter, packet list, details
and bytes, the intercept panel, live charts and the status bar."""

from __future__ import annotations

import time
from typing import Callable

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (QComboBox, QDockWidget, QLabel, QMainWindow, QSpinBox, QSplitter, QStyle,
                               QToolBar, QVBoxLayout, QWidget)

from divertgui.engine.address import PRIORITY_MAX, PRIORITY_MIN, Layer
from divertgui.models.delay_histogram import DelayHistogram
from divertgui.models.intercept_queue import InterceptQueueModel
from divertgui.models.packet_table import PROCESS, PacketTableModel, TimeFormat
from divertgui.models.rules_model import RulesModel
from divertgui.models.stats import TrafficStats
from divertgui.views import window_settings
from divertgui.views.window_layout import keep_on_screen, scrolled
from divertgui.views.banner import Banner
from divertgui.views.capture_options import CaptureOptions, CaptureOptionsDialog
from divertgui.views.charts_panel import ChartsPanel
from divertgui.views.compose_dialog import ComposeDialog
from divertgui.views.connection import ServiceEvents
from divertgui.views.events_view import EventsView
from divertgui.views.file_actions import FileActions
from divertgui.views.filter_editor import FilterEditor, engine_validator
from divertgui.views.intercept_panel import InterceptPanel
from divertgui.views.navigation import PacketNavigation
from divertgui.views.packet_details import PacketDetails
from divertgui.views.packet_list import PacketTableView
from divertgui.views.process_actions import ProcessActions
from divertgui.views.processes_view import ProcessesView
from divertgui.views.rules_panel import RulesPanel
from divertgui.views.status_line import StatusLine
from divertgui.views.stream_actions import StreamActions

Post = Callable[..., None]
CHART_INTERVAL_MS = 250
LIST_INTERVAL_MS = 100
# The packet list and the charts repaint at least this far apart, so that
# the event loop never waits for both in one go.
PAINT_SPREAD_S = 0.04


class MainWindow(QMainWindow):
    TITLE = "divertgui — packet interception workbench"

    def __init__(self, store, post: Post, options: CaptureOptions | None = None, parent=None):
        super().__init__(parent)
        self.store = store
        self.post = post
        self.options = options or CaptureOptions()
        self.files = FileActions(self)
        self.events = ServiceEvents(self)
        self.navigation = PacketNavigation(self)
        self.streams = StreamActions(self)
        self.process_actions = ProcessActions(self)
        self.setWindowTitle(self.TITLE)
        self.count = 0          # rows shown
        self.announced = 0      # rows the session has announced
        self.announced_generation = store.generation
        self.generation = store.generation
        self.running = False
        self.paused = False
        self.source_name = self.options.source
        self.mode_running = ""
        self.state_reason = ""
        self.state_notice = ""      # the notice the running capture's state last gave
        self.session_stats: dict = {}
        self.errors: list[dict] = []
        self.last_display_filter_seconds = 0.0

        self.table_model = PacketTableModel(store, self)
        self.stats = TrafficStats(store)
        self.queue_model = InterceptQueueModel(store, self)
        self.rules_model = RulesModel(self)
        self.delays = DelayHistogram()

        self._build_capture_toolbar()
        self._build_display_bar()
        self._build_central()
        self._build_docks()
        self.status_line = StatusLine(self)
        self._build_actions_and_menus()

        self._rows_shown_at = self._charts_drawn_at = 0.0
        self.rows_timer = QTimer(self)
        self.rows_timer.setSingleShot(True)
        self.rows_timer.setInterval(LIST_INTERVAL_MS)
        self.rows_timer.timeout.connect(self._show_rows)
        self.deferred_charts_timer = QTimer(self)
        self.deferred_charts_timer.setSingleShot(True)
        self.deferred_charts_timer.timeout.connect(self._draw_charts)
        self.chart_timer = QTimer(self)
        self.chart_timer.timeout.connect(self._tick)
        self.chart_timer.start(CHART_INTERVAL_MS)
        window_settings.restore(self)
        self.update_state_widgets()

    # construction ----------------------------------------------------------
    def _build_capture_toolbar(self) -> None:
        bar = QToolBar("Capture", self)
        bar.setObjectName("capture_toolbar")
        bar.setMovable(False)
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.capture_toolbar = bar
        self.start_action = QAction("Start", self)
        self.start_action.setShortcut(QKeySequence("Ctrl+E"))
        self.start_action.setToolTip("Start or stop capturing (Ctrl+E)")
        self.start_action.triggered.connect(self.toggle_capture)
        self.pause_action = QAction(self.style().standardIcon(QStyle.StandardPixmap.SP_MediaPause), "Pause", self)
        self.pause_action.setCheckable(True)
        self.pause_action.setToolTip("Stop adding packets to the list; traffic keeps flowing")
        self.pause_action.toggled.connect(self.set_paused)
        self.clear_action = QAction(self.style().standardIcon(QStyle.StandardPixmap.SP_DialogDiscardButton),
                                    "Clear", self)
        self.clear_action.setToolTip("Empty the capture")
        self.clear_action.triggered.connect(self.clear_capture)
        bar.addAction(self.start_action)
        bar.addAction(self.pause_action)
        bar.addAction(self.clear_action)
        bar.addSeparator()
        bar.addWidget(QLabel(" Capture filter ", self))
        self.capture_filter = FilterEditor("capture", placeholder="true (everything)", parent=self)
        self.capture_filter.setMinimumWidth(320)
        self.capture_filter.applied.connect(lambda _text: self.start_capture())
        bar.addWidget(self.capture_filter)
        bar.addWidget(QLabel(" Mode ", self))
        self.mode = QComboBox(self)
        self.mode.setObjectName("mode")
        self.mode.addItems(["divert", "sniff", "drop"])
        self.mode.setToolTip("divert: packets pass through this program; sniff: copies; drop: matching packets are dropped")
        bar.addWidget(self.mode)
        bar.addWidget(QLabel(" Priority ", self))
        self.priority = QSpinBox(self)
        self.priority.setObjectName("priority")
        self.priority.setRange(PRIORITY_MIN, PRIORITY_MAX)
        bar.addWidget(self.priority)
        bar.addWidget(QLabel(" Layer ", self))
        self.layer = QComboBox(self)
        self.layer.setObjectName("layer")
        self.layer.addItems(["NETWORK", "NETWORK_FORWARD"])
        self.layer.currentTextChanged.connect(self._layer_changed)
        bar.addWidget(self.layer)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)
        self.addToolBarBreak()

    def _build_display_bar(self) -> None:
        bar = QToolBar("Display filter", self)
        bar.setObjectName("display_toolbar")
        bar.setMovable(False)
        bar.addWidget(QLabel(" Display filter ", self))
        self.display_filter = FilterEditor("display", placeholder="Apply a display filter … <Ctrl-/>", parent=self)
        self.display_filter.applied.connect(self.apply_display_filter)
        bar.addWidget(self.display_filter)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)
        self.addToolBarBreak()
        for name, editor in (("Capture filter", self.capture_filter), ("Display filter", self.display_filter),
                             ("Find", self.navigation.find_filter)):
            editor.refused.connect(lambda reason, name=name: self.statusBar().showMessage(f"{name} {reason}", 8000))
        self.navigation.add_find_bar()

    def _build_central(self) -> None:
        self.table = PacketTableView(self.table_model, self)
        self.table.selectionModel().currentRowChanged.connect(self.show_current_packet)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self.process_actions.packet_menu)
        self.details = PacketDetails(self)
        self.notice_banner = Banner("info", self)
        self.error_banner = Banner("error", self)
        self.loss_banner = Banner("error", self)
        self.loss_banner.setObjectName("loss_banner")
        split = QSplitter(Qt.Orientation.Vertical, self)
        split.setObjectName("main_splitter")
        split.addWidget(self.table)
        split.addWidget(self.details)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        self.splitter = split
        central = QWidget(self)
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.notice_banner)
        layout.addWidget(self.error_banner)
        layout.addWidget(self.loss_banner)
        layout.addWidget(split, 1)
        self.setCentralWidget(central)

    def _build_docks(self) -> None:
        self.intercept = InterceptPanel(self.store, self.queue_model, self.post, self)
        self.intercept_dock = QDockWidget("Intercept (hold and edit)", self)
        self.intercept_dock.setObjectName("intercept_dock")
        self.intercept_dock.setWidget(scrolled(self.intercept))
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.intercept_dock)
        self.rules_panel = RulesPanel(self.rules_model, self.post, self)
        self.rules_dock = QDockWidget("Network conditions (rules)", self)
        self.rules_dock.setObjectName("rules_dock")
        self.rules_dock.setWidget(scrolled(self.rules_panel))
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.rules_dock)
        self.tabifyDockWidget(self.intercept_dock, self.rules_dock)
        self.intercept_dock.raise_()
        # The histogram shows what the current rules do, not what earlier ones did.
        self.rules_model.rules_changed.connect(self.delays.clear)
        self.charts = ChartsPanel(self.stats, self, delays=self.delays)
        self.charts_dock = QDockWidget("Charts", self)
        self.charts_dock.setObjectName("charts_dock")
        self.charts_dock.setWidget(scrolled(self.charts))
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.charts_dock)
        self.processes = ProcessesView(self.store, lambda: self.count, self)
        self.processes.filter_requested.connect(self.process_actions.filter_process)
        self.processes.hold_requested.connect(self.process_actions.hold_process)
        self.processes_dock = QDockWidget("Processes", self)
        self.processes_dock.setObjectName("processes_dock")
        self.processes_dock.setWidget(scrolled(self.processes))
        self.processes_dock.hide()     # View > Processes shows it, beside the intercept and rules panels
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.processes_dock)
        self.tabifyDockWidget(self.rules_dock, self.processes_dock)
        self.intercept_dock.raise_()
        self.events_view = EventsView(self.post, self)
        self.events_view.process_filter_requested.connect(
            lambda pid, host: self.process_actions.filter_process(pid, self.store.hosts.index_of(host)))
        self.events_view.display_filter_requested.connect(self.streams.apply_filter_text)
        self.events_dock = QDockWidget("Events (flows, sockets, handles)", self)
        self.events_dock.setObjectName("events_dock")
        self.events_dock.setWidget(scrolled(self.events_view))
        self.events_dock.hide()        # View > Events shows it, beside the charts
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.events_dock)
        self.splitDockWidget(self.charts_dock, self.events_dock, Qt.Orientation.Vertical)
        self.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
        keep_on_screen(self, (self.intercept_dock, self.rules_dock, self.charts_dock, self.processes_dock,
                              self.events_dock))

    def _action(self, menu, text: str, slot, shortcut: str | QKeySequence | None = None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(slot)
        menu.addAction(action)
        self.addAction(action)
        return action

    def _build_actions_and_menus(self) -> None:
        menus = self.menuBar()
        file_menu = self.file_menu = menus.addMenu("&File")
        self.files.fill_menu(file_menu, self._action)
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", self.close, QKeySequence.StandardKey.Quit)

        go_menu = menus.addMenu("&Go")
        self.navigation.fill_menu(go_menu, self._action)
        self._action(go_menu, "Display &Filter", self.display_filter.focus, "Ctrl+/")

        capture_menu = menus.addMenu("&Capture")
        capture_menu.addAction(self.start_action)
        capture_menu.addAction(self.pause_action)
        capture_menu.addAction(self.clear_action)
        self._action(capture_menu, "&Options…", self.options_dialog, "Ctrl+K")

        packet_menu = menus.addMenu("&Packet")
        self._action(packet_menu, "&Compose and Inject…", self.compose_dialog, "Ctrl+I")

        analyze_menu = menus.addMenu("&Analyze")
        statistics_menu = menus.addMenu("&Statistics")
        self.streams.fill_menus(analyze_menu, statistics_menu, self._action)

        view_menu = menus.addMenu("&View")
        time_menu = view_menu.addMenu("&Time Format")
        group = QActionGroup(self)
        self.time_actions = {}
        for time_format in TimeFormat:
            action = QAction(time_format.value, self, checkable=True)
            action.setChecked(time_format is TimeFormat.SINCE_START)
            action.triggered.connect(lambda _=False, f=time_format: self.set_time_format(f))
            group.addAction(action)
            time_menu.addAction(action)
            self.time_actions[time_format] = action
        self.auto_scroll_action = QAction("&Auto-scroll in Live Capture", self, checkable=True)
        self.auto_scroll_action.setChecked(True)
        self.auto_scroll_action.toggled.connect(self._set_auto_scroll)
        view_menu.addAction(self.auto_scroll_action)
        view_menu.addSeparator()
        view_menu.addAction(self.intercept_dock.toggleViewAction())
        view_menu.addAction(self.rules_dock.toggleViewAction())
        view_menu.addAction(self.charts_dock.toggleViewAction())
        view_menu.addAction(self.processes_dock.toggleViewAction())
        view_menu.addAction(self.events_dock.toggleViewAction())

    # session events ----------------------------------------------------------
    def handle_event(self, event: dict) -> None:
        self.events.handle(event)

    def show_notice(self, message: str) -> None:
        """Says something the user must know until they close it (why the demo runs, say)."""
        self.notice_banner.show_message(message)

    def rows_announced(self, count: int, generation: int | None = None) -> None:
        """The session says the store holds `count` rows of store generation `generation`."""
        if generation is not None and generation != self.store.generation:
            # Counted before the store was emptied: its rows are gone.
            return
        self.announced = count
        self.announced_generation = self.store.generation if generation is None else generation
        if self.store.generation != self.generation:
            self._show_rows()
        elif not self.rows_timer.isActive():
            # Showing new rows at most every LIST_INTERVAL_MS, as Wireshark does:
            # a repaint per session event would leave no time for the user.
            self.rows_timer.start()

    def _show_rows(self) -> None:
        self.rows_timer.setInterval(LIST_INTERVAL_MS)
        wait = self._charts_drawn_at + PAINT_SPREAD_S - time.monotonic()
        if wait > 0 and self.store.generation == self.generation:
            self.rows_timer.start(int(wait * 1000) + 1)
            return
        self._rows_shown_at = time.monotonic()
        if self.store.generation != self.generation:
            self.generation = self.store.generation
            self._reset_views()
        if self.announced_generation != self.store.generation:
            # The count announced was the emptied store's; the next event brings the new one.
            return
        count = min(self.announced, len(self.store))
        if count == self.count:
            return
        self.count = count
        self.table_model.refresh(count, self.announced_generation)
        if self.table.isColumnHidden(PROCESS) and len(self.store.processes) > 1:
            self.table.setColumnHidden(PROCESS, False)
        self.table.follow()
        self.status_line.update()

    def _reset_views(self) -> None:
        self.count = 0
        self.table_model.reset_to(0)
        self.stats.clear()
        self.queue_model.store_emptied()
        self.details.clear()
        self.events_view.store_emptied(self.store.generation)

    # capture control ---------------------------------------------------------------
    def start_capture(self) -> None:
        if not self.capture_filter.is_valid():
            self.statusBar().showMessage(f"Capture filter not applied: {self.capture_filter.problem()}", 8000)
            return
        self.files.before_capture()
        text = self.capture_filter.text() or "true"
        fields = dict(source=self.options.source, filter=text, mode=self.mode.currentText(),
                      priority=self.priority.value(), layer=self.layer.currentText())
        if self.options.source == "demo":
            fields["rate"] = float(self.options.rate)
        if self.options.source == "replay":
            fields.update(path=self.options.path, speed=float(self.options.speed))
        if self.options.source == "live" and fields["mode"] == "divert" and self.options.workers != 1:
            fields["workers"] = self.options.workers
        if self.options.source == "live" and self.options.cgroup:
            fields["cgroup"] = self.options.cgroup
        if text != "true":
            self.capture_filter.remember(text)
        self.post("start", **fields)
        self.rules_panel.set_capture_filter(text, Layer[self.layer.currentText()])

    def stop_capture(self) -> None:
        self.post("stop")

    def toggle_capture(self) -> None:
        if self.running:
            self.stop_capture()
        else:
            self.start_capture()

    def set_paused(self, paused: bool) -> None:
        if paused != self.paused:
            self.post("pause", paused=paused)

    def clear_capture(self) -> None:
        self.post("clear")

    def _layer_changed(self, layer: str) -> None:
        for editor in (self.capture_filter, self.display_filter, self.navigation.find_filter, self.intercept.filter):
            editor.set_validator(engine_validator(layer))

    def update_state_widgets(self) -> None:
        self.start_action.setText("Stop" if self.running else "Start")
        self.start_action.setIcon(self.style().standardIcon(
            QStyle.StandardPixmap.SP_MediaStop if self.running else QStyle.StandardPixmap.SP_MediaPlay))
        self.pause_action.blockSignals(True)
        self.pause_action.setChecked(self.paused)
        self.pause_action.blockSignals(False)
        for widget in (self.mode, self.priority, self.layer):
            widget.setEnabled(not self.running)
        self.intercept.set_capture_mode((self.mode_running or self.mode.currentText()) if self.running else "")
        self.status_line.update()

    def _tick(self) -> None:
        wait = self._rows_shown_at + PAINT_SPREAD_S - time.monotonic()
        if wait > 0:
            self.deferred_charts_timer.start(int(wait * 1000) + 1)
        else:
            self._draw_charts()

    def _draw_charts(self) -> None:
        self._charts_drawn_at = time.monotonic()
        self.stats.update(self.count)
        self.stats.live = self.running
        if self.running:
            # Packets carry monotonic times while capturing; idle seconds then show as zero.
            self.stats.advance_to(time.monotonic_ns())
        self.charts.redraw()
        self.status_line.update()

    # display filter, selection, navigation ---------------------------------------------
    def apply_display_filter(self, text: str) -> None:
        started = time.perf_counter()
        if text and text != "true":
            from divertgui.engine.filter import compile_filter
            self.table_model.set_display_filter(compile_filter(text, Layer[self.layer.currentText()]))
        else:
            self.table_model.set_display_filter(None)
        self.last_display_filter_seconds = time.perf_counter() - started
        self.statusBar().showMessage(
            f"Display filter applied: {self.table_model.rowCount():,} of {self.count:,} packets "
            f"({self.last_display_filter_seconds * 1000:.0f} ms)", 5000)
        self.status_line.update()

    def show_current_packet(self, current, _previous=None) -> None:
        if not current.isValid() or self.table_model.stale():
            self.details.clear()
            return
        row = self.table_model.store_row(current.row())
        try:
            self.details.show_packet(self.store.raw(row), self.store.original(row), self.store.process(row))
        except IndexError:
            self.details.clear()

    def set_time_format(self, time_format: TimeFormat) -> None:
        self.time_actions[time_format].setChecked(True)
        self.table_model.set_time_format(time_format)

    def _set_auto_scroll(self, enabled: bool) -> None:
        self.table.auto_scroll = enabled

    # dialogs ---------------------------------------------------------------------------
    def options_dialog(self) -> None:
        dialog = CaptureOptionsDialog(self.options, self)
        if dialog.exec():
            self.options = dialog.options()
            if self.options.source == "demo" and self.running:
                self.post("set_rate", rate=float(self.options.rate))

    def make_compose_dialog(self) -> ComposeDialog:
        current = self.table.currentIndex()
        selected = None
        if current.isValid():
            row = self.table_model.store_row(current.row())
            selected = (self.store.raw(row), self.store.address(row))
        return ComposeDialog(self.post, selected, self)

    def compose_dialog(self) -> None:
        self.make_compose_dialog().show()

    def closeEvent(self, event) -> None:
        window_settings.save(self)
        super().closeEvent(event)
