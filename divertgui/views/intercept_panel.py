"""Hold and edit: the intercept filter, the queue of held packets, the editor
and the verdict buttons. Keys as in mitmproxy: a forward, A forward all,
d drop, D drop all, u forward unmodified, e edit."""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QTimer, Qt
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDoubleSpinBox, QHBoxLayout, QHeaderView,
                               QLabel, QPushButton, QSplitter, QTableView, QVBoxLayout, QWidget)

from divertgui.models.intercept_queue import COLUMNS
from divertgui.views.filter_editor import FilterEditor
from divertgui.views.packet_editor import EditError, PacketEditor
from divertgui.views.wrapped_label import WrappedLabel

Post = Callable[..., None]
# Columns widen to fit the newest rows of each batch; a burst of held packets
# is measured on this many rows, not all of them.
FIT_ROWS_PER_BATCH = 256
AGE_COLUMN = COLUMNS.index("Held")
# The held list never shows fewer rows than this; beyond it the editor gets the larger share.
HELD_ROWS_SHOWN = 4
HELD_SHARE, EDITOR_SHARE = 2, 3
ROW_HEIGHT = 20
# What the panel says instead of what it holds while a capture runs in a mode where nothing is held.
CANNOT_HOLD = {
    "sniff": "Sniff mode: packets are copies and cannot be held; choose divert to hold",
    "drop": "Drop mode: matching packets are dropped in the kernel and cannot be held; choose divert to hold",
}
NO_HELD_PACKET = "No held packet selected"


def _row(*widgets: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    for widget in widgets:
        row.addWidget(widget)
    row.addStretch(1)
    return row


class SharedSplitter(QSplitter):
    """A vertical splitter that shares its height out by fixed shares, whatever its size,
    until the user drags its handle; from then on it keeps theirs."""

    def __init__(self, shares: tuple[int, ...], parent=None):
        super().__init__(Qt.Orientation.Vertical, parent)
        self.shares = shares
        self.placed_by_user = False
        self.setChildrenCollapsible(False)
        self.splitterMoved.connect(self._placed)

    def _placed(self, *_):
        self.placed_by_user = True

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if not self.placed_by_user:
            total = sum(self.sizes())
            self.setSizes([total * share // sum(self.shares) for share in self.shares])


class InterceptPanel(QWidget):
    def __init__(self, store, queue_model, post: Post, parent=None):
        super().__init__(parent)
        self.store = store
        self.queue = queue_model
        self.post = post
        self.current_id: int | None = None
        self._holding = ""                      # the intercept filter in force ("" when none)
        self._held_pids: list[int] = []         # processes whose every packet is held
        self._capture_mode = ""                 # the running capture's mode ("" when none runs)

        self.filter = FilterEditor("intercept", placeholder="Hold packets matching…",
                                   parent=self)
        self.filter.applied.connect(self.set_intercept)
        self.filter.refused.connect(lambda reason: self.status.setText(f"Intercept filter {reason}"))
        self.status = WrappedLabel("Holding nothing", self)
        self.status.setObjectName("intercept_status")

        self.table = QTableView(self)
        self.table.setObjectName("held_queue")
        self.table.setModel(queue_model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(ROW_HEIGHT)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        for column in range(queue_model.columnCount() - 1):
            self.table.setColumnWidth(column, header.sectionSizeHint(column))
        self.table.setMinimumHeight(header.sizeHint().height() + HELD_ROWS_SHOWN * ROW_HEIGHT
                                    + 2 * self.table.frameWidth() + self.table.horizontalScrollBar().sizeHint().height())
        self.table.selectionModel().currentRowChanged.connect(self._on_current)
        queue_model.rowsInserted.connect(self._fit_new_rows)
        queue_model.rowsInserted.connect(self._on_queue_changed)
        queue_model.rowsRemoved.connect(self._on_queue_changed)
        queue_model.modelReset.connect(self._on_queue_changed)

        self.editor = PacketEditor(self, empty_text=NO_HELD_PACKET)
        self.editor.validity_changed.connect(lambda _valid: self._update_buttons())

        self.forward_button = QPushButton("Forward", self)
        self.forward_button.setToolTip("Send the packet as edited (a)")
        self.forward_button.clicked.connect(self.forward)
        self.unmodified_button = QPushButton("Forward unmodified", self)
        self.unmodified_button.setToolTip("Send the packet as it was captured (u)")
        self.unmodified_button.clicked.connect(self.forward_unmodified)
        self.drop_button = QPushButton("Drop", self)
        self.drop_button.setToolTip("Drop the packet (d)")
        self.drop_button.clicked.connect(self.drop)
        self.forward_all_button = QPushButton("Forward all", self)
        self.forward_all_button.setToolTip("Send every held packet unmodified (A)")
        self.forward_all_button.clicked.connect(self.forward_all)
        self.drop_all_button = QPushButton("Drop all", self)
        self.drop_all_button.setToolTip("Drop every held packet (D)")
        self.drop_all_button.clicked.connect(self.drop_all)

        self.timeout = QDoubleSpinBox(self)
        self.timeout.setRange(0, 3600)
        self.timeout.setDecimals(1)
        self.timeout.setSuffix(" s")
        self.timeout.setSpecialValueText("never")
        self.timeout.setToolTip("Release held packets automatically after this long (0 = never)")
        self.timeout_action = QComboBox(self)
        self.timeout_action.addItems(["forward", "drop"])
        self.timeout.valueChanged.connect(self._send_timeout)
        self.timeout_action.currentIndexChanged.connect(self._send_timeout)

        # Rows short enough for the narrowest side panel: no button is cut short there.
        buttons = _row(self.forward_button, self.unmodified_button, self.drop_button)
        buttons_all = _row(self.forward_all_button, self.drop_all_button)
        auto_release = _row(QLabel("Auto:", self), self.timeout_action, QLabel("after", self), self.timeout)

        top = QWidget(self)
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.filter)
        top_layout.addWidget(self.status)
        top_layout.addWidget(self.table, 1)
        top_layout.addLayout(buttons_all)
        top_layout.addLayout(auto_release)
        bottom = QWidget(self)
        bottom_layout = QVBoxLayout(bottom)
        bottom_layout.setContentsMargins(0, 0, 0, 0)
        bottom_layout.addWidget(self.editor, 1)
        bottom_layout.addLayout(buttons)
        split = SharedSplitter((HELD_SHARE, EDITOR_SHARE), self)
        split.setObjectName("intercept_split")
        split.addWidget(top)
        split.addWidget(bottom)
        self.split = split
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(split)

        for key, slot in (("a", self.forward), ("Shift+A", self.forward_all), ("d", self.drop),
                          ("Shift+D", self.drop_all), ("u", self.forward_unmodified), ("e", self.edit)):
            shortcut = QShortcut(QKeySequence(key), self.table)
            shortcut.setContext(Qt.ShortcutContext.WidgetShortcut)
            shortcut.activated.connect(slot)
        self.age_timer = QTimer(self)
        self.age_timer.timeout.connect(queue_model.refresh_ages)
        self.age_timer.timeout.connect(self._fit_ages)
        self.age_timer.start(1000)
        self._update_buttons()

    # commands -------------------------------------------------------------
    def set_intercept(self, text: str) -> None:
        self.post("set_intercept", filter=text)
        self._holding = text if text != "false" else ""
        self._show_holding()

    def set_held_processes(self, pids: list[int]) -> None:
        """Shows that every packet of these processes is held, besides what the filter holds."""
        self._held_pids = list(pids)
        self._show_holding()

    def set_capture_mode(self, mode: str) -> None:
        """The mode of the capture now running, "" when none runs."""
        self._capture_mode = mode
        self._show_holding()

    def _show_holding(self) -> None:
        if self._capture_mode in CANNOT_HOLD:
            waiting = f" (intercept filter, for divert mode: {self._holding})" if self._holding else ""
            self.status.setText(CANNOT_HOLD[self._capture_mode] + waiting)
            return
        processes = f"every packet of process {', '.join(map(str, self._held_pids))}" if self._held_pids else ""
        if self._holding:
            self.status.setText(f"Holding: {self._holding}" + (f"; {processes}" if processes else ""))
        else:
            self.status.setText(f"Holding {processes}" if processes else "Holding nothing")

    def _send_timeout(self, *_):
        self.post("set_hold_timeout", seconds=float(self.timeout.value()),
                  action=self.timeout_action.currentText())

    def forward(self) -> None:
        if self.current_id is None:
            return
        try:
            data = self.editor.edited()
        except (EditError, ValueError) as exc:
            self.editor.show_error(exc)
            return
        if data != self.editor.raw:
            self.post("forward", ids=[self.current_id], data={self.current_id: data.hex()})
        else:
            self.post("forward", ids=[self.current_id], data={})

    def forward_unmodified(self) -> None:
        if self.current_id is not None:
            self.post("forward_unmodified", ids=[self.current_id])

    def drop(self) -> None:
        if self.current_id is not None:
            self.post("drop", ids=[self.current_id])

    def forward_all(self) -> None:
        self.post("forward_all")

    def drop_all(self) -> None:
        self.post("drop_all")

    def edit(self) -> None:
        self.editor.tabs.setCurrentIndex(0)
        self.editor.form.setFocus()
        first = next(iter(self.editor.form.edits.values()), None)
        if first is not None:
            first.setFocus()

    # selection ------------------------------------------------------------
    def select(self, hold_id: int) -> None:
        row = self.queue.row_of(hold_id)
        if row is not None:
            self.table.selectRow(row)

    def _on_current(self, current, _previous=None) -> None:
        if not current.isValid():
            self._show(None)
            return
        self._show(self.queue.hold_id(current.row()))

    def _show(self, hold_id: int | None) -> None:
        if hold_id == self.current_id:
            return
        self.current_id = hold_id
        if hold_id is None:
            self.editor.clear()
        else:
            row = self.queue.store_row(self.queue.row_of(hold_id))
            self.editor.set_packet(self.store.raw(row), self.store.address(row))
        self._update_buttons()

    def _on_queue_changed(self, *_):
        if self.current_id is not None and self.queue.row_of(self.current_id) is not None:
            self.table.selectRow(self.queue.row_of(self.current_id))
        elif self.queue.rowCount():
            self.current_id = None
            self.table.selectRow(0)
            if self.current_id is None:
                self._show(self.queue.hold_id(0))
        else:
            self._show(None)
        self._update_buttons()

    # column widths ------------------------------------------------------------
    def _fit_new_rows(self, _parent, first: int, last: int) -> None:
        """Widens the columns (all but Info, which stretches) to fit the rows just held.

        Columns only grow: the rows already shown keep their place while the
        user reads them, and a width the user dragged wider stays.
        """
        rows = range(max(first, last - FIT_ROWS_PER_BATCH + 1), last + 1)
        for column in range(self.queue.columnCount() - 1):
            self._fit(column, rows)

    def _fit_ages(self) -> None:
        # The first row has been held longest, so its age is the longest text.
        if self.queue.rowCount():
            self._fit(AGE_COLUMN, range(1))

    def _fit(self, column: int, rows: range) -> None:
        grid = 1 if self.table.showGrid() else 0
        needed = max((self.table.sizeHintForIndex(self.queue.index(row, column)).width() + grid for row in rows),
                     default=0)
        if needed > self.table.columnWidth(column):
            self.table.setColumnWidth(column, needed)

    def _update_buttons(self) -> None:
        has_current = self.current_id is not None
        for button in (self.unmodified_button, self.drop_button):
            button.setEnabled(has_current)
        # Bytes that are not hex cannot be sent: Forward waits until they are.
        self.forward_button.setEnabled(has_current and self.editor.is_valid())
        has_any = self.queue.rowCount() > 0
        self.forward_all_button.setEnabled(has_any)
        self.drop_all_button.setEnabled(has_any)
        self.editor.setEnabled(has_current)
