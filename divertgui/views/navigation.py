"""Go > Go to Packet, Previous/Next Packet and Find Packet for the main window."""

from __future__ import annotations

from PySide6.QtCore import QItemSelectionModel, Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QAbstractItemView, QInputDialog, QLabel, QToolBar

from divertgui.engine.address import Layer
from divertgui.views.filter_editor import FilterEditor


class PacketNavigation:
    def __init__(self, window):
        self.window = window
        self.find_bar = QToolBar("Find", window)
        self.find_bar.setObjectName("find_toolbar")
        self.find_bar.setMovable(False)
        self.find_bar.addWidget(QLabel(" Find packet ", window))
        self.find_filter = FilterEditor("find", placeholder="filter expression; Enter finds the next match",
                                        parent=window)
        self.find_filter.applied.connect(self.find_next)
        self.find_bar.addWidget(self.find_filter)

    def add_find_bar(self) -> None:
        self.window.addToolBar(Qt.ToolBarArea.TopToolBarArea, self.find_bar)
        self.find_bar.hide()

    def fill_menu(self, menu, add_action) -> None:
        add_action(menu, "&Go to Packet…", self.go_to_dialog, "Ctrl+G")
        add_action(menu, "&Previous Packet", lambda: self.step(-1), "Ctrl+Up")
        add_action(menu, "&Next Packet", lambda: self.step(1), "Ctrl+Down")
        add_action(menu, "&Find Packet…", self.show_find, QKeySequence.StandardKey.Find)

    def select_view_row(self, view_row: int) -> None:
        table = self.window.table
        index = table.model().index(view_row, 0)
        table.selectionModel().setCurrentIndex(
            index, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
        table.scrollTo(index, QAbstractItemView.ScrollHint.PositionAtCenter)

    def selected_store_rows(self) -> list[int]:
        table = self.window.table
        return sorted(table.model().store_row(index.row()) for index in table.selectionModel().selectedRows())

    def go_to_packet(self, number: int) -> bool:
        view_row = self.window.table_model.view_row(number - 1)
        if view_row is None:
            self.window.statusBar().showMessage(f"Packet {number} is not displayed", 5000)
            return False
        self.select_view_row(view_row)
        return True

    def go_to_dialog(self) -> None:
        number, ok = QInputDialog.getInt(self.window, "Go to packet", "Packet number:", 1, 1,
                                         max(1, self.window.count))
        if ok:
            self.go_to_packet(number)

    def step(self, delta: int) -> None:
        shown = self.window.table_model.rowCount()
        if not shown:
            return
        current = self.window.table.currentIndex()
        row = current.row() + delta if current.isValid() else (0 if delta > 0 else shown - 1)
        self.select_view_row(max(0, min(shown - 1, row)))

    def show_find(self) -> None:
        self.find_bar.show()
        self.find_filter.focus()

    def find_next(self, text: str) -> int | None:
        """Selects the next displayed packet after the current one that matches `text`."""
        if not text:
            return None
        from divertgui.engine.filter import compile_filter
        window = self.window
        compiled = compile_filter(text, Layer[window.layer.currentText()])
        model = window.table_model
        shown = model.rowCount()
        current = window.table.currentIndex()
        start = current.row() + 1 if current.isValid() else 0
        for step in range(shown):
            view_row = (start + step) % shown
            row = model.store_row(view_row)
            if compiled.match(window.store.raw(row), window.store.address(row)):
                self.select_view_row(view_row)
                return view_row
        window.statusBar().showMessage(f"No packet matches {text}", 5000)
        return None
