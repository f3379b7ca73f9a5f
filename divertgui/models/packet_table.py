"""The packet list: a Qt table over the capture store, through a display index."""

from __future__ import annotations

import datetime
import enum

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt
from PySide6.QtGui import QBrush, QColor, QFont

from divertgui.models.row_text import RowText


class TimeFormat(enum.Enum):
    SINCE_START = "Seconds since capture start"
    ABSOLUTE = "Time of day"
    DELTA = "Seconds since previous displayed packet"


COLUMNS = ("No.", "Time", "Dir", "Source", "Destination", "Protocol", "Length", "Info", "Verdict")
NUMBER, TIME, DIRECTION, SOURCE, DESTINATION, PROTOCOL, LENGTH, INFO, VERDICT = range(len(COLUMNS))

VERDICT_NAMES = ("passed", "modified", "dropped", "held", "injected", "sniffed")
VERDICT_COLOURS = {
    "modified": QColor("#d9b8f5"),
    "dropped": QColor("#f2a0a0"),
    "held": QColor("#ffe066"),
    "injected": QColor("#a8d4ff"),
}
# Wireshark's default colouring rules, roughly: users read them at a glance.
PROTOCOL_COLOURS = {
    "TCP": QColor("#e7e6ff"),
    "UDP": QColor("#daeeff"),
    "DNS": QColor("#d6ecff"),
    "HTTP": QColor("#e4ffc7"),
    "TLS": QColor("#eef5dc"),
    "QUIC": QColor("#e1f0f0"),
    "ICMP": QColor("#fce0ff"),
    "ICMPv6": QColor("#fce0ff"),
}
HELD_ROW_COLOUR = QColor("#fff6c2")
DROPPED_TEXT_COLOUR = QColor("#9b1c1c")


class PacketTableModel(QAbstractTableModel):
    """Rows are stored packets that pass the display filter, oldest first.

    `refresh(count)` follows the store up to `count` rows (the count of the
    last "rows" event: the GUI thread never reads beyond it).
    """

    def __init__(self, store, parent=None):
        super().__init__(parent)
        self.store = store
        self.count = 0
        self.index_rows: np.ndarray | None = None   # None: no display filter, every row shown
        self.display_index = None
        self.display_filter = None
        self.shown = 0
        self.time_format = TimeFormat.SINCE_START
        self.generation = getattr(store, "generation", 0)
        self.text = RowText(store)
        self._fixed_font = QFont("DejaVu Sans Mono", 9)

    # following the store ------------------------------------------------
    def refresh(self, count: int) -> None:
        if count < self.count:
            self.reset_to(count)
            return
        self.count = count
        if self.display_index is not None:
            self.display_index.update()
            rows = np.asarray(self.display_index.rows)
            rows = rows[: np.searchsorted(rows, count)]
        else:
            rows = None
        new_shown = len(rows) if rows is not None else count
        if new_shown > self.shown:
            self.beginInsertRows(QModelIndex(), self.shown, new_shown - 1)
            self.index_rows = rows
            self.shown = new_shown
            self.endInsertRows()
        else:
            self.index_rows = rows
        if self.shown:
            # Verdicts change after the fact (held -> modified / dropped).
            self.dataChanged.emit(self.index(0, 0), self.index(self.shown - 1, len(COLUMNS) - 1))

    def reset_to(self, count: int) -> None:
        self.beginResetModel()
        self.count = count
        self.shown = 0
        self.index_rows = None
        self.generation = getattr(self.store, "generation", 0)
        self.text.clear()
        if self.display_filter is not None:
            from divertgui.engine.store import DisplayIndex
            self.display_index = DisplayIndex(self.store, self.display_filter, self.display_filter.layer)
        self.endResetModel()
        self.refresh(count)

    def set_display_filter(self, compiled_filter) -> None:
        """A compiled Filter, or None to show every packet."""
        self.display_filter = compiled_filter
        self.display_index = None
        if compiled_filter is not None:
            from divertgui.engine.store import DisplayIndex
            self.display_index = DisplayIndex(self.store, compiled_filter, compiled_filter.layer)
        count = self.count
        self.beginResetModel()
        self.shown = 0
        self.index_rows = None
        self.count = 0
        self.endResetModel()
        self.refresh(count)

    def stale(self) -> bool:
        """True between the store being emptied and the "rows" event that says so."""
        return getattr(self.store, "generation", 0) != self.generation

    def store_row(self, view_row: int) -> int:
        return int(self.index_rows[view_row]) if self.index_rows is not None else view_row

    def view_row(self, store_row: int) -> int | None:
        """Where a stored packet is shown, or None when the display filter hides it."""
        if self.index_rows is None:
            return store_row if 0 <= store_row < self.shown else None
        position = int(np.searchsorted(self.index_rows, store_row))
        if position < self.shown and int(self.index_rows[position]) == store_row:
            return position
        return None

    def value(self, name: str, store_row: int) -> int:
        """One cell of a store column; views ask only for visible rows, so no whole column is copied."""
        return int(self.store.column(name, store_row, store_row + 1)[0])

    def verdict_name(self, store_row: int) -> str:
        value = self.value("verdict", store_row)
        return VERDICT_NAMES[value] if 0 <= value < len(VERDICT_NAMES) else str(value)

    def set_time_format(self, time_format: TimeFormat) -> None:
        self.time_format = time_format
        if self.shown:
            self.dataChanged.emit(self.index(0, TIME), self.index(self.shown - 1, TIME))

    def row_changed(self, store_row: int) -> None:
        """A stored row was edited (its bytes or verdict)."""
        self.text.forget(store_row)
        view_row = self.view_row(store_row)
        if view_row is not None:
            self.dataChanged.emit(self.index(view_row, 0), self.index(view_row, len(COLUMNS) - 1))

    # Qt model -----------------------------------------------------------
    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else self.shown

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or index.row() >= self.shown or self.stale():
            return None
        row = self.store_row(index.row())
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(index.row(), row, column)
        if role == Qt.ItemDataRole.BackgroundRole:
            verdict = self.verdict_name(row)
            if column == VERDICT and verdict in VERDICT_COLOURS:
                return QBrush(VERDICT_COLOURS[verdict])
            if verdict == "held":
                return QBrush(HELD_ROW_COLOUR)
            colour = PROTOCOL_COLOURS.get(self.text.get(row)[2])
            return QBrush(colour) if colour is not None else None
        if role == Qt.ItemDataRole.ForegroundRole:
            if self.verdict_name(row) == "dropped":
                return QBrush(DROPPED_TEXT_COLOUR)
            return None
        if role == Qt.ItemDataRole.FontRole and column in (NUMBER, TIME, LENGTH):
            return self._fixed_font
        if role == Qt.ItemDataRole.TextAlignmentRole and column in (NUMBER, TIME, LENGTH):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole and column == VERDICT and self.verdict_name(row) == "modified":
            return "Edited before it was forwarded; the original is kept (see the details pane)."
        if role == Qt.ItemDataRole.UserRole:
            return row
        return None

    def _display(self, view_row: int, row: int, column: int):
        if column == NUMBER:
            return str(row + 1)
        if column == TIME:
            return self._time_text(view_row, row)
        if column == DIRECTION:
            if self.value("loopback", row):
                return "lo ↺"
            return "out →" if self.value("outbound", row) else "in ←"
        if column == LENGTH:
            return str(self.value("length", row))
        if column == VERDICT:
            return self.verdict_name(row)
        source, destination, protocol, info = self.text.get(row)
        return (source, destination, protocol, info)[column - SOURCE] if column != INFO else info

    def _time_text(self, view_row: int, row: int) -> str:
        if self.time_format is TimeFormat.ABSOLUTE:
            wall = self.value("wall_ns", row)
            moment = datetime.datetime.fromtimestamp(wall / 1e9)
            return moment.strftime("%H:%M:%S.%f")
        stamp = self.value("timestamp", row)
        if self.time_format is TimeFormat.DELTA:
            previous = self.store_row(view_row - 1) if view_row > 0 else row
            return f"{(stamp - self.value('timestamp', previous)) / 1e9:.6f}"
        return f"{(stamp - self.value('timestamp', 0)) / 1e9:.6f}"
