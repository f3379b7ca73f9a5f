"""Statistics → Conversations and Endpoints: two sortable tables over the
engine's arrays, for every packet or only the displayed ones, and "apply as
filter" for the selected entry."""

from __future__ import annotations

from typing import Callable

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDialog, QHBoxLayout, QLabel, QPushButton,
                               QTableView, QTabWidget, QVBoxLayout)

from divertgui.engine.conversations import Conversations, Endpoints, conversations, endpoints, protocol_name
from divertgui.engine.process_totals import ProcessTotals, process_totals
from divertgui.models.array_table import ArrayTableModel, Column
from divertgui.views.processes_view import process_columns, process_table, show_hosts

RowsProvider = Callable[[bool], "np.ndarray | None"]


def _count(values: np.ndarray) -> Callable[[int], str]:
    return lambda i: f"{int(values[i]):,}"


def _seconds(values: np.ndarray) -> Callable[[int], str]:
    return lambda i: f"{float(values[i]):.6f}"


def conversation_columns(c: Conversations) -> list[Column]:
    def port(values):
        return lambda i: str(int(values[i])) if c.has_ports(i) else ""

    return [
        Column("Protocol", lambda i: protocol_name(int(c.protocol[i])), (c.protocol,), False),
        Column("Address A", c.address_a, (c.version, c.a_high, c.a_low), False),
        Column("Port A", port(c.port_a), (c.port_a,)),
        Column("Address B", c.address_b, (c.version, c.b_high, c.b_low), False),
        Column("Port B", port(c.port_b), (c.port_b,)),
        Column("Packets", _count(c.packets), (c.packets,)),
        Column("Bytes", _count(c.bytes), (c.bytes,)),
        Column("Packets A → B", _count(c.packets_a_to_b), (c.packets_a_to_b,)),
        Column("Bytes A → B", _count(c.bytes_a_to_b), (c.bytes_a_to_b,)),
        Column("Packets B → A", _count(c.packets_b_to_a), (c.packets_b_to_a,)),
        Column("Bytes B → A", _count(c.bytes_b_to_a), (c.bytes_b_to_a,)),
        Column("Rel Start", _seconds(c.start), (c.start,)),
        Column("Duration", _seconds(c.duration), (c.duration,)),
    ]


def endpoint_columns(e: Endpoints) -> list[Column]:
    return [
        Column("Address", e.address, (e.version, e.high, e.low), False),
        Column("Packets", _count(e.packets), (e.packets,)),
        Column("Bytes", _count(e.bytes), (e.bytes,)),
        Column("Tx Packets", _count(e.tx_packets), (e.tx_packets,)),
        Column("Tx Bytes", _count(e.tx_bytes), (e.tx_bytes,)),
        Column("Rx Packets", _count(e.rx_packets), (e.rx_packets,)),
        Column("Rx Bytes", _count(e.rx_bytes), (e.rx_bytes,)),
    ]


def _table(model: ArrayTableModel, name: str, parent) -> QTableView:
    view = QTableView(parent)
    view.setObjectName(name)
    view.setModel(model)
    view.setSortingEnabled(True)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    view.verticalHeader().hide()
    view.verticalHeader().setDefaultSectionSize(20)
    view.setWordWrap(False)
    return view


class ConversationsDialog(QDialog):
    """`rows_provider(displayed_only)` gives the rows to count (None: every row)."""

    filter_requested = Signal(str)
    CONVERSATIONS, ENDPOINTS, PROCESSES = 0, 1, 2

    def __init__(self, store, rows_provider: RowsProvider, parent=None):
        super().__init__(parent)
        self.store = store
        self.rows_provider = rows_provider
        self.setObjectName("conversations_dialog")
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.setWindowTitle("Conversations and Endpoints")
        self.resize(1100, 560)
        self.conversations: Conversations | None = None
        self.endpoints: Endpoints | None = None
        self.processes: ProcessTotals | None = None
        self.conversation_model = ArrayTableModel(self)
        self.endpoint_model = ArrayTableModel(self)
        self.conversation_table = _table(self.conversation_model, "conversation_table", self)
        self.endpoint_table = _table(self.endpoint_model, "endpoint_table", self)
        self.tabs = QTabWidget(self)
        self.tabs.addTab(self.conversation_table, "Conversations")
        self.tabs.addTab(self.endpoint_table, "Endpoints")
        self.process_model = ArrayTableModel(self)
        self.process_table = process_table(self.process_model, self)
        self.tabs.addTab(self.process_table, "Processes")

        self.displayed_only = QCheckBox("Limit to display filter", self)
        self.displayed_only.setObjectName("limit_to_display_filter")
        self.displayed_only.toggled.connect(self.refresh)
        refresh = QPushButton("&Refresh", self)
        refresh.clicked.connect(self.refresh)
        self.filter_direction = QComboBox(self)
        self.filter_direction.addItem("A ↔ B", None)
        self.filter_direction.addItem("A → B", "a_to_b")
        self.filter_direction.addItem("B → A", "b_to_a")
        self.filter_direction.setToolTip("Which directions of a conversation the filter selects")
        apply_button = QPushButton("&Apply as Filter", self)
        apply_button.setObjectName("apply_as_filter")
        apply_button.clicked.connect(self.apply_as_filter)
        close_button = QPushButton("&Close", self)
        close_button.clicked.connect(self.close)
        self.summary = QLabel(self)

        controls = QHBoxLayout()
        controls.addWidget(self.displayed_only)
        controls.addWidget(refresh)
        controls.addStretch(1)
        controls.addWidget(self.filter_direction)
        controls.addWidget(apply_button)
        controls.addWidget(close_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.summary)
        layout.addLayout(controls)
        self.refresh()

    def refresh(self) -> None:
        rows = self.rows_provider(self.displayed_only.isChecked())
        self.conversations = conversations(self.store, rows)
        self.endpoints = endpoints(self.store, rows)
        self.processes = process_totals(self.store, rows)
        self.process_model.set_columns(process_columns(self.processes, self.store), len(self.processes))
        show_hosts(self.process_table, self.processes)
        self.conversation_model.set_columns(conversation_columns(self.conversations), len(self.conversations))
        self.endpoint_model.set_columns(endpoint_columns(self.endpoints), len(self.endpoints))
        for view in (self.conversation_table, self.endpoint_table, self.process_table):
            view.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
            view.resizeColumnsToContents()
        self.tabs.setTabText(0, f"Conversations · {len(self.conversations):,}")
        self.tabs.setTabText(1, f"Endpoints · {len(self.endpoints):,}")
        self.tabs.setTabText(2, f"Processes · {len(self.processes):,}")
        skipped = self.conversations.skipped
        self.summary.setText(f"{skipped:,} packets are not IPv4 or IPv6 and belong to no conversation"
                             if skipped else "")

    def show_tab(self, tab: int) -> None:
        self.tabs.setCurrentIndex(tab)

    def selected_filter(self) -> str | None:
        """The filter for the selected conversation or endpoint of the current tab."""
        if self.tabs.currentIndex() == self.PROCESSES:
            return None
        on_conversations = self.tabs.currentIndex() == self.CONVERSATIONS
        view = self.conversation_table if on_conversations else self.endpoint_table
        index = view.currentIndex()
        if not index.isValid():
            return None
        entry = view.model().entry(index.row())
        if on_conversations:
            return self.conversations.filter(entry, self.filter_direction.currentData())
        return self.endpoints.filter(entry)

    def apply_as_filter(self) -> None:
        text = self.selected_filter()
        if text is None:
            self.summary.setText("Select a conversation or an endpoint first")
            return
        self.filter_requested.emit(text)
