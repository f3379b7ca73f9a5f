"""The packet list: a Qt table over the capture store, through a display index."""

from __future__ import annotations

import collections
import datetime
import enum
from typing import NamedTuple

import numpy as np
from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtGui import QBrush, QColor, QFont

from divertgui.engine.display_index import DisplayIndex
from divertgui.engine.shown_rows import ShownRows, host_test, process_test
from divertgui.models.named_columns import NamedColumnsModel
from divertgui.models.row_text import RowText


class TimeFormat(enum.Enum):
    SINCE_START = "Seconds since capture start"
    ABSOLUTE = "Time of day"
    DELTA = "Seconds since previous displayed packet"


COLUMNS = ("No.", "Time", "Dir", "Source", "Destination", "Protocol", "Length", "Info", "Verdict", "Process", "Host")
_COLUMN_COUNT = len(COLUMNS)
_ROOT = QModelIndex()
NUMBER, TIME, DIRECTION, SOURCE, DESTINATION, PROTOCOL, LENGTH, INFO, VERDICT, PROCESS, HOST = range(len(COLUMNS))

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


class RowCells(NamedTuple):
    """Everything a view asks about one row, computed once."""

    row: int              # the store row
    texts: tuple
    background: QBrush | None
    foreground: QBrush | None
    verdict_background: QBrush | None
    # Per column, {role number: value} of the roles besides the text and the row that have a value;
    # shared by every row that looks alike, so that a cached row is one object for the garbage
    # collector to walk, not one per cell.
    styles: tuple


# Rows are prepared in blocks: one store column read per block, not per cell,
# and a repaint is then only dictionary lookups.
BLOCK_ROWS = 64
CACHED_ROWS = 16384
_BLOCK_COLUMNS = ("timestamp", "wall_ns", "length", "outbound", "direction_unknown", "loopback", "verdict", "process",
                  "host")


class PacketTableModel(NamedColumnsModel):
    """Rows are stored packets that pass the display filter, oldest first.

    `refresh(count, generation)` follows the store up to `count` rows (the
    count of the last "rows" event: the GUI thread never reads beyond it); a
    count from another generation of the store (an event sent just before a
    clear) is ignored.
    """

    COLUMNS = COLUMNS

    def __init__(self, store, parent=None):
        super().__init__(parent)
        self.store = store
        self.count = 0
        self.index_rows: np.ndarray | None = None   # None: no display filter, every row shown
        self.display_filter = None
        self.process_pid: int | None = None      # only this process's packets are shown
        self.process_host: int | None = None     # the host of that pid (a store host index); None: any
        self.host: int | None = None             # only this host's packets are shown (a store host index)
        self.shown_rows: ShownRows | None = None  # None: no filter is on
        self.shown = 0
        self.time_format = TimeFormat.SINCE_START
        self.generation = store.generation
        self.text = RowText(store)
        self._cells: collections.OrderedDict[int, RowCells] = collections.OrderedDict()
        self._styles: dict[tuple, tuple] = {}
        self._first_stamp: int | None = None
        self._fixed_font = QFont("DejaVu Sans Mono", 9)
        self._brushes = {colour.name(): QBrush(colour) for colour in
                         (*VERDICT_COLOURS.values(), *PROTOCOL_COLOURS.values(), HELD_ROW_COLOUR, DROPPED_TEXT_COLOUR)}

    # following the store ------------------------------------------------
    def refresh(self, count: int, generation: int | None = None) -> None:
        if generation is not None and generation != self.store.generation:
            return
        if count < self.count:
            self.reset_to(count)
            return
        self.count = count
        if self.shown_rows is not None:
            self.shown_rows.update(count)
            rows = self.shown_rows.rows
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

    def _forget_all(self) -> None:
        self._cells.clear()
        self._first_stamp = None
        self.text.clear()

    def reset_to(self, count: int) -> None:
        self.beginResetModel()
        self.count = count
        self.shown = 0
        self.index_rows = None
        self.generation = self.store.generation
        self._forget_all()
        self.shown_rows = self._new_shown_rows()
        self.endResetModel()
        self.refresh(count)

    def set_display_filter(self, compiled_filter) -> None:
        """A compiled Filter, or None to show every packet."""
        self.display_filter = compiled_filter
        self.shown_rows = self._new_shown_rows()
        count = self.count
        self.beginResetModel()
        self.shown = 0
        self.index_rows = None
        self.count = 0
        # Delta times depend on which rows are displayed.
        self._cells.clear()
        self.endResetModel()
        self.refresh(count)

    def set_process_filter(self, pid: int | None, host: int | None = None) -> None:
        """Show only the packets of process `pid` (besides the display filter), on store host index
        `host` or any host; None: every process."""
        self.process_pid = pid
        self.process_host = host if pid is not None else None
        self.set_display_filter(self.display_filter)

    def filtered(self) -> bool:
        """True while a display filter, a process or a host filter chooses the rows shown."""
        return self.shown_rows is not None

    def _new_shown_rows(self) -> ShownRows | None:
        if self.display_filter is None and self.process_pid is None and self.host is None:
            return None
        display = None if self.display_filter is None else \
            DisplayIndex(self.store, self.display_filter, self.display_filter.layer)
        keys = [process_test(self.store, self.process_pid)] if self.process_pid is not None else []
        keys += [host_test(host) for host in (self.process_host, self.host) if host is not None]
        return ShownRows(self.store, display, keys)

    def set_host_filter(self, host: int | None) -> None:
        """Show only the packets of store host index `host` (besides the other filters); None: every host's."""
        self.host = host
        self.set_display_filter(self.display_filter)

    def stale(self) -> bool:
        """True between the store being emptied and the "rows" event that says so."""
        return self.store.generation != self.generation

    def store_row(self, view_row: int) -> int:
        return int(self.index_rows[view_row]) if self.index_rows is not None else view_row

    def displayed_rows(self) -> np.ndarray:
        """The store rows the list shows, in order."""
        if self.index_rows is None:
            return np.arange(self.count)
        return np.asarray(self.index_rows[:self.shown])

    def view_row(self, store_row: int) -> int | None:
        """Where a stored packet is shown, or None when the display filter hides it."""
        if self.index_rows is None:
            return store_row if 0 <= store_row < self.shown else None
        position = int(np.searchsorted(self.index_rows, store_row))
        if position < self.shown and int(self.index_rows[position]) == store_row:
            return position
        return None

    def value(self, name: str, store_row: int) -> int:
        """One cell of a store column."""
        return int(self.store.column(name, store_row, store_row + 1)[0])

    def verdict_name(self, store_row: int) -> str:
        return _verdict_name(self.value("verdict", store_row))

    def set_time_format(self, time_format: TimeFormat) -> None:
        self.time_format = time_format
        self._cells.clear()
        if self.shown:
            self.dataChanged.emit(self.index(0, TIME), self.index(self.shown - 1, TIME))

    def row_changed(self, store_row: int) -> None:
        """A stored row was edited (its bytes or verdict)."""
        self.text.forget(store_row)
        self._cells.pop(store_row, None)
        view_row = self.view_row(store_row)
        if view_row is not None:
            self.dataChanged.emit(self.index(view_row, 0), self.index(view_row, len(COLUMNS) - 1))

    # preparing rows -------------------------------------------------------
    def cells(self, view_row: int) -> RowCells:
        row = self.store_row(view_row)
        cells = self._cells.get(row)
        if cells is None:
            self._prepare_block(view_row)
            cells = self._cells[row]
        return cells

    def _prepare_block(self, first_view_row: int) -> None:
        """Rows from `first_view_row` on, up to BLOCK_ROWS of them or the first one prepared already.

        A view asks from the top of what it shows: following the newest rows,
        a block aligned to BLOCK_ROWS would prepare mostly rows above the screen.
        """
        stop = min(first_view_row + BLOCK_ROWS, self.shown)
        if self.index_rows is not None:
            rows = [int(r) for r in self.index_rows[first_view_row:stop]]
        else:
            rows = list(range(first_view_row, stop))
        prepared = self._cells
        for at, row in enumerate(rows):
            if row in prepared:
                del rows[at:]
                break
        low, high = rows[0], rows[-1] + 1
        if high - low <= 16 * BLOCK_ROWS:
            columns = {name: self.store.column(name, low, high) for name in _BLOCK_COLUMNS}
            record = [{name: int(columns[name][row - low]) for name in _BLOCK_COLUMNS} for row in rows]
        else:   # a sparse display filter: read the rows one by one rather than the span
            record = [{name: self.value(name, row) for name in _BLOCK_COLUMNS} for row in rows]
        if self._first_stamp is None:
            self._first_stamp = self.value("timestamp", 0)
        previous = self.value("timestamp", self.store_row(first_view_row - 1)) if first_view_row else None
        for row, fields in zip(rows, record):
            stamp = fields["timestamp"]
            self._cells[row] = self._row_cells(row, fields, stamp - (stamp if previous is None else previous))
            previous = stamp
        while len(self._cells) > CACHED_ROWS:
            self._cells.popitem(last=False)

    def _row_cells(self, row: int, fields: dict, delta_ns: int) -> RowCells:
        source, destination, protocol, info = self.text.get(row)
        verdict = _verdict_name(fields["verdict"])
        if self.time_format is TimeFormat.ABSOLUTE:
            time_text = datetime.datetime.fromtimestamp(fields["wall_ns"] / 1e9).strftime("%H:%M:%S.%f")
        elif self.time_format is TimeFormat.DELTA:
            time_text = f"{delta_ns / 1e9:.6f}"
        else:
            time_text = f"{(fields['timestamp'] - self._first_stamp) / 1e9:.6f}"
        if fields["loopback"]:
            direction = "lo ↺"
        elif fields["direction_unknown"]:
            direction = "?"
        else:
            direction = "out →" if fields["outbound"] else "in ←"
        process = self.store.processes.get(fields["process"])
        texts = (str(row + 1), time_text, direction, source, destination, protocol, str(fields["length"]),
                 info, verdict, process.label() if process is not None else "",
                 self.store.hosts.name(fields["host"]))
        if verdict == "held":
            background = self._brush(HELD_ROW_COLOUR)
        else:
            colour = PROTOCOL_COLOURS.get(protocol)
            background = self._brush(colour) if colour is not None else None
        foreground = self._brush(DROPPED_TEXT_COLOUR) if verdict == "dropped" else None
        verdict_colour = VERDICT_COLOURS.get(verdict)
        verdict_background = self._brush(verdict_colour) if verdict_colour is not None else background
        # Brushes come from self._brushes, one object per colour: their ids name the look.
        look = (id(background), id(foreground), id(verdict_background), verdict == "modified")
        styles = self._styles.get(look)
        if styles is None:
            styles = self._styles[look] = self._column_styles(background, foreground, verdict_background,
                                                              verdict == "modified", len(texts))
        return RowCells(row, texts, background, foreground, verdict_background, styles)

    def _column_styles(self, background, foreground, verdict_background, modified: bool, columns: int) -> tuple:
        styles = []
        for column in range(columns):
            values = {}
            cell_background = verdict_background if column == VERDICT else background
            if cell_background is not None:
                values[_BACKGROUND] = cell_background
            if foreground is not None:
                values[_FOREGROUND] = foreground
            if column in (NUMBER, TIME, LENGTH):
                values[_FONT] = self._fixed_font
                values[_ALIGNMENT] = _RIGHT
            if column == VERDICT and modified:
                values[_TOOLTIP] = MODIFIED_TOOLTIP
            styles.append(values)
        return tuple(styles)

    def _brush(self, colour: QColor) -> QBrush:
        return self._brushes[colour.name()]

    # Qt model -----------------------------------------------------------
    def index(self, row, column, parent=_ROOT):
        # The inherited index() asks rowCount() and columnCount() first: two
        # more calls into Python for every cell a view paints.
        if 0 <= row < self.shown and 0 <= column < _COLUMN_COUNT and not parent.isValid():
            return self.createIndex(row, column)
        return QModelIndex()

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else self.shown

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        cells = self._cells_at(index)
        return None if cells is None else self._role_value(cells, index, role)

    def multiData(self, index, role_data_span) -> None:
        # Views ask for every role of a cell at once: one call into Python per
        # cell instead of one per role, which is what keeps painting cheap
        # while the session thread competes for the interpreter. The values
        # were prepared with the row, so a cell is only dictionary lookups.
        cells = self._cells_at(index)
        if cells is None:
            for role_data in role_data_span:
                role_data.clearData()
            return
        column = index.column()
        values = cells.styles[column]
        for role_data in role_data_span:
            role = role_data.role()
            value = cells.texts[column] if role == _DISPLAY else cells.row if role == _USER else values.get(role)
            # The span is reused from cell to cell: clear what this cell does not set.
            if value is None:
                role_data.clearData()
            else:
                role_data.setData(value)

    def _cells_at(self, index) -> RowCells | None:
        if not index.isValid() or index.row() >= self.shown or self.stale():
            return None
        try:
            return self.cells(index.row())
        except IndexError:
            # The session emptied the store; the "rows" event saying so is on its way.
            return None

    def _role_value(self, cells: RowCells, index, role):
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return cells.texts[column]
        if role == Qt.ItemDataRole.BackgroundRole:
            return cells.verdict_background if column == VERDICT else cells.background
        if role == Qt.ItemDataRole.ForegroundRole:
            return cells.foreground
        if role == Qt.ItemDataRole.FontRole:
            return self._fixed_font if column in (NUMBER, TIME, LENGTH) else None
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return _RIGHT if column in (NUMBER, TIME, LENGTH) else None
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == VERDICT and cells.texts[VERDICT] == "modified":
                return MODIFIED_TOOLTIP
            return None
        if role == Qt.ItemDataRole.UserRole:
            return self.store_row(index.row())
        return None


def _verdict_name(value: int) -> str:
    return VERDICT_NAMES[value] if 0 <= value < len(VERDICT_NAMES) else str(value)


_RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
MODIFIED_TOOLTIP = "Edited before it was forwarded; the original is kept (see the details pane)."
_DISPLAY, _BACKGROUND, _FOREGROUND, _FONT, _ALIGNMENT, _TOOLTIP, _USER = (
    int(role.value) for role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.BackgroundRole,
                                 Qt.ItemDataRole.ForegroundRole, Qt.ItemDataRole.FontRole,
                                 Qt.ItemDataRole.TextAlignmentRole, Qt.ItemDataRole.ToolTipRole,
                                 Qt.ItemDataRole.UserRole))
