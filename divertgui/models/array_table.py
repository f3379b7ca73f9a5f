"""A sortable table over entries held as arrays: sorting reorders an index, never the data."""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
from PySide6.QtCore import QModelIndex, Qt

from divertgui.models.named_columns import NamedColumnsModel


class Column(NamedTuple):
    title: str
    text: Callable[[int], str]
    sort_keys: tuple          # arrays, most significant first
    numeric: bool = True


class ArrayTableModel(NamedColumnsModel):
    """Rows are entry numbers into the columns' arrays; `entry(view_row)` maps back."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.columns: list[Column] = []
        self.order = np.zeros(0, np.int64)

    def set_columns(self, columns: list[Column], count: int) -> None:
        self.beginResetModel()
        self.columns = list(columns)
        self.COLUMNS = tuple(column.title for column in self.columns)
        self.order = np.arange(count)
        self.endResetModel()

    def replace_values(self, columns: list[Column]) -> None:
        """The same entries with new values: no reset, so that a view keeps its scroll and selection."""
        self.columns = list(columns)
        if len(self.order) and self.columns:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self.order) - 1, len(self.columns) - 1))

    def entry(self, view_row: int) -> int:
        return int(self.order[view_row])

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.order)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        column = self.columns[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return column.text(self.entry(index.row()))
        if role == Qt.ItemDataRole.TextAlignmentRole and column.numeric:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def sort(self, column: int, order=Qt.SortOrder.AscendingOrder) -> None:
        if not 0 <= column < len(self.columns):
            return
        self.layoutAboutToBeChanged.emit()
        keys = self.columns[column].sort_keys
        ordered = np.lexsort(tuple(reversed(keys))) if len(self.order) else self.order
        self.order = ordered[::-1] if order == Qt.SortOrder.DescendingOrder else ordered
        self.layoutChanged.emit()
