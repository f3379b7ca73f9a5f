"""A message across the top of the window that stays until closed."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QToolButton, QWidget


class Banner(QWidget):
    """A message across the top of the window that stays until closed: an error, or an
    information such as why live capture is not running."""

    COLOURS = {"error": "background: #fde2e2; color: #7a0000;", "info": "background: #e1ecfb; color: #0b3566;"}

    def __init__(self, kind: str, parent=None):
        super().__init__(parent)
        self.kind = kind
        self.setObjectName(f"{kind}_banner")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.setStyleSheet(self.COLOURS[kind])
        self._lines: list[str] = []
        self._where = ""
        self.label = QLabel(self)
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.label.setObjectName(f"{kind}_banner_text")
        close = QToolButton(self)
        close.setText("✕")
        close.setToolTip("Hide this message")
        close.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 3, 4, 3)
        layout.addWidget(self.label, 1)
        layout.addWidget(close)
        self.hide()

    def show_message(self, message: str, where: str = "", add: bool = False) -> None:
        """Show `message` in place of the one shown, or, with `add`, below one of the same `where`
        still shown (several hosts lost at once are each named)."""
        if where:
            line = f"<b>{html.escape(where)}:</b> {html.escape(message)}"
            kept = add and not self.isHidden() and self._where == where
            self._lines = [*self._lines, line] if kept else [line]
            self.label.setTextFormat(Qt.TextFormat.RichText)
            self.label.setText("<br>".join(self._lines))
        else:
            self._lines = []
            self.label.setTextFormat(Qt.TextFormat.PlainText)
            self.label.setText(message)
        self._where = where
        self.show()
