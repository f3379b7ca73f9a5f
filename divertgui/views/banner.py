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

    def show_message(self, message: str, where: str = "") -> None:
        self.label.setTextFormat(Qt.TextFormat.RichText if where else Qt.TextFormat.PlainText)
        self.label.setText(f"<b>{html.escape(where)}:</b> {html.escape(message)}" if where else message)
        self.show()
