"""The Events view: FLOW, SOCKET and REFLECT events listed live as the capture service sees them.

The user picks the layers and one filter for them (it must be valid at each
chosen layer: processId, event and the ports are; localPort is not at
REFLECT), and optionally a cgroup whose processes alone the FLOW and SOCKET
layers watch. Double-clicking an event, or Filter on This Process in its
menu, asks for that process's packets alone (`process_filter_requested(pid)`);
Filter on This Flow asks for a display filter of its 5-tuple
(`display_filter_requested(text)`).

With several hosts, each event names its host (a Host column), Start and
Stop go to the host `chosen_host()` names (the capture toolbar's selector;
None: every host), and the status line says what each host watches.
"""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QTimer, Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QDockWidget, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
                               QMainWindow, QPushButton, QTableView, QVBoxLayout, QWidget)

from divertgui.engine.conversations import TCP, UDP, conversation_filter
from divertgui.engine.event_records import EVENT_LAYERS, EventRecord
from divertgui.engine.address_text import event_address_text
from divertgui.models.events_model import HOST, EventsModel
from divertgui.views.filter_editor import FilterEditor
from divertgui.views.window_layout import dock_of

Post = Callable[..., None]
# What each column's default width is measured on; the last column takes what is left.
FIRST_HEIGHT = 320
# A window shorter than this shows the events in a tab rather than below the other panels.
SHARED_BELOW = 3 * FIRST_HEIGHT
WIDEST = ("00:00:00.000000", "REFLECT", "ESTABLISHED", "a-process-name (1234567)", "ICMPv6",
          "[2001:db8::ffff]:65535", "[2001:db8::ffff]:65535")


def flow_display_filter(record: EventRecord) -> str | None:
    """The display filter of the event's TCP or UDP flow, both ways; None when its 5-tuple is not whole."""
    flow = record.flow
    if flow is None or flow.protocol not in (TCP, UDP) or not (flow.local_port and flow.remote_port):
        return None
    return conversation_filter(6 if flow.ipv6 else 4, flow.protocol, event_address_text(flow.local, flow.ipv6),
                               flow.local_port, event_address_text(flow.remote, flow.ipv6), flow.remote_port)


class EventsView(QWidget):
    process_filter_requested = Signal(int, str)     # pid, the name of its host ("" for none)
    display_filter_requested = Signal(str)

    def __init__(self, post: Post, parent=None):
        super().__init__(parent)
        self.setObjectName("events_view")
        self.post = post
        self.model = EventsModel(self)
        self.chosen_host: Callable[[], int | None] = lambda: None
        self._shown_before = False
        self.layer_boxes = {}
        controls = QHBoxLayout()
        controls.setContentsMargins(0, 0, 0, 0)
        for layer in EVENT_LAYERS:
            box = QCheckBox(layer.name, self)
            box.setChecked(True)
            box.toggled.connect(lambda _checked: self.filter.validate())
            self.layer_boxes[layer] = box
            controls.addWidget(box)
        self.filter = FilterEditor("events", self._validate, "filter, e.g. processId == 1234", self)
        self.filter.setToolTip("A filter for each chosen layer (empty: every event)")
        self.filter.applied.connect(lambda _text: self.start())
        controls.addWidget(self.filter, 1)
        self.cgroup = QLineEdit(self)
        self.cgroup.setObjectName("events_cgroup")
        self.cgroup.setPlaceholderText("cgroup (empty: every process)")
        # Wide enough to say what it is for while empty.
        self.cgroup.setMinimumWidth(self.cgroup.fontMetrics().horizontalAdvance(self.cgroup.placeholderText()) + 16)
        self.cgroup.setToolTip("FLOW and SOCKET: only the processes of this cgroup v2, a path under the "
                               "cgroup mount such as system.slice/nginx.service")
        controls.addWidget(self.cgroup)
        self.start_button = QPushButton("Start", self)
        self.start_button.clicked.connect(self.toggle)
        controls.addWidget(self.start_button)

        self.table = QTableView(self)
        self.table.setObjectName("events_table")
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        metrics = self.table.fontMetrics()
        for column, text in enumerate(WIDEST):
            header.resizeSection(column, metrics.horizontalAdvance(text) + 16)
        header.moveSection(header.visualIndex(HOST), 1)
        self.table.setColumnHidden(HOST, True)     # shown once the window has several hosts
        self.table.doubleClicked.connect(self._on_double_click)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)
        self.process_action = QAction("Filter on This Process", self.table)
        self.process_action.triggered.connect(self.filter_on_process)
        self.flow_action = QAction("Filter on This Flow", self.table)
        self.flow_action.triggered.connect(self.filter_on_flow)
        self.table.addAction(self.process_action)
        self.table.addAction(self.flow_action)
        self.table.selectionModel().currentRowChanged.connect(lambda *_: self._update_actions())
        self.status = QLabel(self)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(controls)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.status)
        self._update_actions()
        self.show_state()

    def show_hosts(self) -> None:
        """The window has several hosts: each event names its host."""
        self.table.setColumnHidden(HOST, False)
        self.table.horizontalHeader().resizeSection(HOST, self.table.fontMetrics().horizontalAdvance("a-host-name") + 16)
        self.show_state()

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if not self._shown_before:
            # A dock shown for the first time gets room for a dozen events.
            self._shown_before = True
            QTimer.singleShot(0, self._make_room)

    def _make_room(self) -> None:
        dock, window = dock_of(self), self.window()
        if not isinstance(window, QMainWindow) or dock is None or dock.isFloating():
            return
        if window.height() < SHARED_BELOW:
            # Too short for the packet list, the charts and a dozen events one above the
            # other: the events take a tab beside a panel already in their area.
            area = window.dockWidgetArea(dock)
            beside = [other for other in window.findChildren(QDockWidget) if other is not dock and
                      other.isVisible() and not other.isFloating() and window.dockWidgetArea(other) == area]
            if beside:
                window.tabifyDockWidget(beside[0], dock)
                dock.raise_()
                return
        if dock.height() < FIRST_HEIGHT:
            window.resizeDocks([dock], [FIRST_HEIGHT], Qt.Orientation.Vertical)

    # the capture ---------------------------------------------------------------------
    @property
    def capturing(self) -> bool:
        """True while the chosen host (or, for every host, any host) watches events."""
        return bool(self.model.capturing(self.chosen_host()))

    def chosen_layers(self):
        return [layer for layer, box in self.layer_boxes.items() if box.isChecked()]

    def _validate(self, text: str):
        from divertgui.engine.filter import FilterError, compile_filter
        for layer in self.chosen_layers():
            try:
                compile_filter(text, layer)
            except FilterError as exc:
                return f"at the {layer.name} layer: {exc.message}", exc.position, exc.suggestion
        return None

    def start(self) -> bool:
        """Asks the service to watch the chosen layers; False (and says why) when it cannot be asked."""
        layers = self.chosen_layers()
        if not layers:
            self.status.setText("Choose FLOW, SOCKET or REFLECT first")
            return False
        if not self.filter.is_valid():
            self.status.setText(f"Event filter not applied: {self.filter.problem()}")
            return False
        text = self.filter.text()
        self.post("start_events", layers={layer.name: text for layer in layers}, cgroup=self.cgroup.text().strip())
        self.status.setText("Starting…")
        return True

    def stop(self) -> None:
        self.post("stop_events")

    def toggle(self) -> None:
        if self.capturing:
            self.stop()
        else:
            self.start()

    def on_events(self, message: dict) -> None:
        """An "events" event from the session."""
        follow = self.table.verticalScrollBar().value() == self.table.verticalScrollBar().maximum()
        added = self.model.apply_event(message)
        if added and follow:
            self.table.scrollToBottom()
        self.show_state()

    def service_gone(self, host: int | None = None) -> None:
        """The capture service of store host index `host` (None: every one) ended: it watches
        nothing any more; the events stay."""
        self.model.host_gone(host)
        self.show_state()

    def store_emptied(self, generation: int) -> None:
        self.model.store_emptied(generation)
        self.show_state()

    def show_state(self) -> None:
        model = self.model
        self.start_button.setText("Stop" if self.capturing else "Start")
        text = f"{len(model.records):,} events"
        several = not self.table.isColumnHidden(HOST)
        for watching in model.watching.values():
            where = f" of cgroup {watching.cgroup}" if watching.cgroup else ""
            watched = ", ".join(f"{name} ({shown})" if shown else name for name, shown in watching.layers.items())
            on = f" on {watching.name}" if several and watching.name else ""
            text += f"; watching {watched}{where}{on}"
        if model.malformed:
            text += f"; {model.malformed:,} malformed events left out (the first: {model.first_problem})"
        self.status.setText(text)

    # the selected event ------------------------------------------------------------------
    def current_record(self) -> EventRecord | None:
        index = self.table.currentIndex()
        return self.model.record(index.row()) if index.isValid() else None

    def _update_actions(self) -> None:
        record = self.current_record()
        self.process_action.setEnabled(record is not None and record.pid > 0)
        self.process_action.setText(f"Filter on {record.process or 'Process'} ({record.pid})" if record
                                    else "Filter on This Process")
        self.flow_action.setEnabled(record is not None and flow_display_filter(record) is not None)

    def filter_on_process(self) -> None:
        record = self.current_record()
        if record is not None and record.pid > 0:
            self.process_filter_requested.emit(record.pid, record.host)

    def filter_on_flow(self) -> None:
        record = self.current_record()
        text = flow_display_filter(record) if record is not None else None
        if text is not None:
            self.display_filter_requested.emit(text)

    def _on_double_click(self, index) -> None:
        if index.isValid():
            self.table.setCurrentIndex(index)
            self.filter_on_process()
