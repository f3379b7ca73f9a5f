"""The Processes view: every local process the capture's packets belong to,
with its flows, bytes each way and packets held, kept current while shown."""

from __future__ import annotations

from typing import Callable

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QAbstractItemView, QLabel, QTableView, QVBoxLayout, QWidget

from divertgui.engine.process_totals import ProcessTally, ProcessTotals
from divertgui.engine.traffic_by_key import host_label
from divertgui.models.array_table import ArrayTableModel, Column

REFRESH_MS = 1000


def process_columns(t: ProcessTotals, store) -> list[Column]:
    """The columns of a process table; the last, Host, is for show_hosts to show or hide."""
    def count(values: np.ndarray):
        return lambda i: f"{int(values[i]):,}"

    names = np.array(t.names, dtype=object)
    hosts = np.array([host_label(store, int(host)) for host in t.hosts], dtype=object)
    return [
        # What a narrow side panel shows first: the process, its flows, its bytes, what it has held.
        Column("Process", lambda i: t.names[i], (names,), False),
        Column("PID", count(t.pids), (t.pids,)),
        Column("Flows", count(t.flows), (t.flows,)),
        Column("Bytes Out", count(t.bytes_out), (t.bytes_out,)),
        Column("Bytes In", count(t.bytes_in), (t.bytes_in,)),
        Column("Held", count(t.held), (t.held,)),
        Column("Packets", count(t.packets), (t.packets,)),
        Column("User", lambda i: t.users[i], (np.array(t.users, dtype=object),), False),
        Column("Host", lambda i: hosts[i], (hosts,), False),
    ]


def show_hosts(view: QTableView, t: ProcessTotals) -> None:
    """The Host column only when the processes come from more than one host, beside the PID
    (a narrow dock shows the first columns)."""
    host = view.model().columnCount() - 1
    view.setColumnHidden(host, len(np.unique(t.hosts)) < 2)
    header = view.horizontalHeader()
    if header.visualIndex(host) != 2:
        header.moveSection(header.visualIndex(host), 2)


def fit_columns(view: QTableView) -> None:
    """Widens each column to its title and values: the first columns fit a narrow panel
    whole. Columns only grow, so a width the user dragged wider stays."""
    header = view.horizontalHeader()
    for column in range(view.model().columnCount()):
        needed = max(view.sizeHintForColumn(column), header.sectionSizeHint(column))
        if needed > header.sectionSize(column):
            header.resizeSection(column, needed)


def process_table(model: ArrayTableModel, parent) -> QTableView:
    view = QTableView(parent)
    view.setObjectName("process_table")
    view.setModel(model)
    view.setSortingEnabled(True)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    view.verticalHeader().hide()
    view.setWordWrap(False)
    view.verticalHeader().setDefaultSectionSize(20)
    # Narrower than Qt's default, so that columns fitted to their texts can shrink to them.
    view.horizontalHeader().setDefaultSectionSize(view.horizontalHeader().minimumSectionSize())
    return view


class ProcessesView(QWidget):
    """`count()` gives how many of the store's rows to count (those the window shows).
    While shown, it refreshes every REFRESH_MS, new packets or not (held packets get released).
    A process is a pid on its host (a store host index). Double-clicking a process, or Filter on
    This Process in its menu, asks for its packets alone (`filter_requested(pid, host)`); Hold
    Everything from This Process asks its host to hold its packets (`hold_requested(pid, host)`)."""

    filter_requested = Signal(int, int)
    hold_requested = Signal(int, int)

    def __init__(self, store, count: Callable[[], int], parent=None):
        super().__init__(parent)
        self.setObjectName("processes_view")
        self.store = store
        self.count = count
        self.tally = ProcessTally(store)
        self.totals: ProcessTotals | None = None
        self.model = ArrayTableModel(self)
        self.table = process_table(self.model, self)
        self.table.doubleClicked.connect(self._on_double_click)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)
        self.filter_action = self._row_action("Filter on This Process", self.filter_requested)
        self.hold_action = self._row_action("Hold Everything from This Process", self.hold_requested)
        self.summary = QLabel(self)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.summary)
        self.timer = QTimer(self)
        self.timer.setInterval(REFRESH_MS)
        self.timer.timeout.connect(self.refresh)
        self.refresh()

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.refresh()
        self.timer.start()

    def hideEvent(self, event) -> None:
        super().hideEvent(event)
        self.timer.stop()

    def refresh(self) -> None:
        selected = self.selected_process()
        header = self.table.horizontalHeader()
        column, order = header.sortIndicatorSection(), header.sortIndicatorOrder()
        totals = self.tally.totals(self.count())
        same = self.totals is not None and np.array_equal(totals.pids, self.totals.pids) \
            and np.array_equal(totals.hosts, self.totals.hosts)
        self.totals = totals
        if same:
            self.model.replace_values(process_columns(totals, self.store))
        else:
            self.model.set_columns(process_columns(totals, self.store), len(totals))
        show_hosts(self.table, totals)
        fit_columns(self.table)
        if 0 <= column < len(self.model.COLUMNS):
            self.model.sort(column, order)
        if selected is not None:
            self.select_process(*selected)
        unattributed = self.totals.unattributed
        self.summary.setText(f"{unattributed:,} packets belong to no local process found" if unattributed else "")

    def process_at(self, view_row: int) -> tuple[int, int]:
        """The (pid, host) of a row of the table."""
        entry = self.model.entry(view_row)
        return int(self.totals.pids[entry]), int(self.totals.hosts[entry])

    def selected_process(self) -> tuple[int, int] | None:
        """The selected (pid, host), None when none is selected."""
        index = self.table.currentIndex()
        if not index.isValid() or self.totals is None:
            return None
        return self.process_at(index.row())

    def select_process(self, pid: int, host: int) -> None:
        for view_row in range(self.model.rowCount()):
            if self.process_at(view_row) == (pid, host):
                self.table.selectRow(view_row)
                return

    def _row_action(self, text: str, signal) -> QAction:
        action = QAction(text, self.table)

        def emit() -> None:
            selected = self.selected_process()
            if selected is not None:
                signal.emit(*selected)

        action.triggered.connect(emit)
        self.table.addAction(action)
        return action

    def _on_double_click(self, index) -> None:
        if index.isValid():
            self.filter_requested.emit(*self.process_at(index.row()))
