"""The queue of held packets, as the Session reports them in "held" events."""

from __future__ import annotations

import time

from PySide6.QtCore import QModelIndex, Qt

from divertgui.models.named_columns import NamedColumnsModel
from divertgui.models.row_text import RowText

COLUMNS = ("Id", "No.", "Held", "Protocol", "Source", "Destination", "Info")


class InterceptQueueModel(NamedColumnsModel):
    COLUMNS = COLUMNS

    def __init__(self, store, parent=None):
        super().__init__(parent)
        self.store = store
        self.text = RowText(store)
        self.items: list[tuple[int, int, float]] = []   # (hold id, store row, held since)

    def apply_event(self, event: dict) -> None:
        # An event may hold and release the same packet: add first, then remove.
        # A packet already listed is announced again with its new row after the
        # store was emptied.
        known = {item[0]: position for position, item in enumerate(self.items)}
        held = []
        for announced in event.get("held", ()):
            hold_id, row = int(announced["id"]), int(announced["row"])
            if hold_id in known:
                position = known[hold_id]
                self.items[position] = (hold_id, row, self.items[position][2])
                self.text.forget(row)
                self.dataChanged.emit(self.index(position, 0), self.index(position, len(COLUMNS) - 1))
            else:
                held.append((hold_id, row, time.monotonic()))
        if held:
            self.beginInsertRows(QModelIndex(), len(self.items), len(self.items) + len(held) - 1)
            self.items.extend(held)
            self.endInsertRows()
        released = {int(i) for i in event.get("released", ())}
        # Row by row, not a reset: the selection (the packet being edited) survives.
        for row in reversed(range(len(self.items))):
            if self.items[row][0] in released:
                self.beginRemoveRows(QModelIndex(), row, row)
                del self.items[row]
                self.endRemoveRows()

    def clear(self) -> None:
        self.beginResetModel()
        self.items = []
        self.text.clear()
        self.endResetModel()

    def store_emptied(self) -> None:
        """The rows changed under the held packets; the session announces their new rows."""
        self.text.clear()

    def hold_id(self, row: int) -> int:
        return self.items[row][0]

    def store_row(self, row: int) -> int:
        return self.items[row][1]

    def ids(self) -> list[int]:
        return [item[0] for item in self.items]

    def row_of(self, hold_id: int) -> int | None:
        for row, item in enumerate(self.items):
            if item[0] == hold_id:
                return row
        return None

    def refresh_ages(self) -> None:
        if self.items:
            self.dataChanged.emit(self.index(0, 2), self.index(len(self.items) - 1, 2))

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.items)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or role != Qt.ItemDataRole.DisplayRole:
            return None
        hold_id, row, since = self.items[index.row()]
        column = index.column()
        if column == 0:
            return str(hold_id)
        if column == 1:
            return str(row + 1)
        if column == 2:
            return f"{time.monotonic() - since:.1f} s"
        source, destination, protocol, info = self.text.get(row)
        return {3: protocol, 4: source, 5: destination, 6: info}[column]
