"""The packet list: a table that follows new rows while the user watches the newest."""

from __future__ import annotations

from PySide6.QtGui import QFont
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView

from divertgui.models.packet_table import DIRECTION, HOST, INFO, PROCESS, VERDICT

# No., Time, Dir, Source, Destination, Protocol, Length, Info (stretches), Verdict, Process, Host.
COLUMN_WIDTHS = (55, 85, 45, 125, 125, 60, 50, 200, 70, 130, 90)

class PacketTableView(QTableView):
    """A packet list that follows new rows until the user scrolls away from the bottom or
    selects a packet other than the newest; scrolling back to the bottom follows again."""

    def __init__(self, model, parent=None):
        super().__init__(parent)
        self.auto_scroll = True
        self.following = True
        self._following_now = False
        self.verticalScrollBar().valueChanged.connect(self._scrolled)
        self.setObjectName("packet_list")
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setShowGrid(False)
        self.setWordWrap(False)
        self.verticalHeader().hide()
        # Fixed row heights: Qt then never measures rows, and a million scroll smoothly.
        self.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.verticalHeader().setDefaultSectionSize(19)
        self.horizontalHeader().setStretchLastSection(False)
        self.horizontalHeader().setHighlightSections(False)
        self.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setFont(QFont("DejaVu Sans", 9))
        self.setModel(model)
        for column, width in enumerate(COLUMN_WIDTHS):
            self.setColumnWidth(column, width)
        header = self.horizontalHeader()
        header.setSectionResizeMode(INFO, QHeaderView.ResizeMode.Stretch)
        # The verdict stands before Info, which takes what width is left: both stay in view.
        header.moveSection(header.visualIndex(VERDICT), header.visualIndex(INFO))
        header.moveSection(header.visualIndex(PROCESS), header.visualIndex(INFO))
        header.moveSection(header.visualIndex(HOST), header.visualIndex(DIRECTION))
        # Shown once a packet has a process (live captures): other sources would show it empty.
        self.setColumnHidden(PROCESS, True)
        # Shown once the window has several capture services (divertgui.views.hosts_bar).
        self.setColumnHidden(HOST, True)

    def paintEvent(self, event) -> None:
        # Painting from a Python override keeps the interpreter lock for the
        # whole repaint; otherwise every cell's multiData call would wait for
        # the busy session thread to hand the lock over.
        super().paintEvent(event)

    def _scrolled(self, value: int) -> None:
        # Only the user's scrolling decides: leaving the bottom stops following,
        # coming back resumes it. New rows alone never change it.
        if not self._following_now:
            self.following = value >= self.verticalScrollBar().maximum() - 1

    def currentChanged(self, current, previous) -> None:
        super().currentChanged(current, previous)
        if current.isValid():
            # A selected packet stays where the user sees it while new rows arrive.
            self.following = current.row() >= self.model().rowCount() - 1

    def follow(self) -> None:
        """Shows the newest rows when auto-scroll is on and the user has not scrolled away."""
        if self.auto_scroll and self.following:
            self._following_now = True
            try:
                self.scrollToBottom()
            finally:
                self._following_now = False
