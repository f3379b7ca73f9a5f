"""Follow TCP/UDP stream: a followed conversation's data, client in red and
server in blue as in Wireshark, shown as ASCII, a hex dump or raw hex, for
both directions or one; with find and buttons that filter the packet list."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (QComboBox, QDialog, QHBoxLayout, QLabel, QLineEdit, QPushButton, QTextEdit,
                               QVBoxLayout)

from divertgui.engine.streams import Direction, Stream, StreamSegment

CLIENT_STYLE = "color: #7f0000; background: #fbeded;"
SERVER_STYLE = "color: #00007f; background: #ededfb;"
GAP_STYLE = "color: #666666; font-style: italic;"
FORMATS = ("ASCII", "Hex dump", "Raw")
_PRINTABLE = set(range(0x20, 0x7F))


def _ascii(data: bytes) -> str:
    return "".join(chr(b) if b in _PRINTABLE or b in (0x0A, 0x09) else "." for b in data.replace(b"\r\n", b"\n"))


def _hex_dump(data: bytes, offset: int, indent: str) -> str:
    lines = []
    for at in range(0, len(data), 16):
        chunk = data[at:at + 16]
        hex_part = " ".join(f"{b:02x}" for b in chunk[:8]) + "  " + " ".join(f"{b:02x}" for b in chunk[8:])
        text = "".join(chr(b) if b in _PRINTABLE else "." for b in chunk)
        lines.append(f"{indent}{offset + at:08X}  {hex_part:<49} {text}")
    return "\n".join(lines) + "\n"


class FollowStreamDialog(QDialog):
    """Shows one Stream; emits filter_requested(text) for the display filter bar."""

    filter_requested = Signal(str)

    def __init__(self, stream: Stream, parent=None):
        super().__init__(parent)
        self.stream = stream
        self.setObjectName("follow_stream_dialog")
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.setWindowTitle(f"Follow {stream.protocol_name} Stream — {stream.describe()}")
        self.resize(900, 650)

        self.text_view = QTextEdit(self)
        self.text_view.setObjectName("stream_text")
        self.text_view.setReadOnly(True)
        self.text_view.setLineWrapMode(QTextEdit.LineWrapMode.NoWrap)
        self.text_view.setFont(QFont("DejaVu Sans Mono", 9))

        self.summary = QLabel(self)
        self.summary.setObjectName("stream_summary")
        self.direction = QComboBox(self)
        self.direction.setObjectName("stream_direction")
        for label, value in ((self._direction_label(None), None),
                             (self._direction_label(Direction.CLIENT_TO_SERVER), Direction.CLIENT_TO_SERVER),
                             (self._direction_label(Direction.SERVER_TO_CLIENT), Direction.SERVER_TO_CLIENT)):
            self.direction.addItem(label, value)
        self.show_as = QComboBox(self)
        self.show_as.setObjectName("stream_format")
        self.show_as.addItems(FORMATS)
        self.direction.currentIndexChanged.connect(self.render)
        self.show_as.currentIndexChanged.connect(self.render)

        self.find_edit = QLineEdit(self)
        self.find_edit.setObjectName("stream_find")
        self.find_edit.setPlaceholderText("Find in the stream")
        self.find_edit.returnPressed.connect(self.find_next)
        find_button = QPushButton("Find &Next", self)
        find_button.clicked.connect(self.find_next)
        self.only_button = QPushButton("&Show this conversation only", self)
        self.only_button.setToolTip("Display only the packets of this conversation (in the chosen direction)")
        self.only_button.clicked.connect(self.show_only)
        self.exclude_button = QPushButton("&Filter out this stream", self)
        self.exclude_button.setToolTip("Display every packet except this conversation's")
        self.exclude_button.clicked.connect(self.filter_out)
        close_button = QPushButton("&Close", self)
        close_button.clicked.connect(self.close)

        choices = QHBoxLayout()
        choices.addWidget(QLabel("Show", self))
        choices.addWidget(self.direction, 1)
        choices.addWidget(QLabel("as", self))
        choices.addWidget(self.show_as)
        find_row = QHBoxLayout()
        find_row.addWidget(QLabel("Find:", self))
        find_row.addWidget(self.find_edit, 1)
        find_row.addWidget(find_button)
        buttons = QHBoxLayout()
        buttons.addWidget(self.only_button)
        buttons.addWidget(self.exclude_button)
        buttons.addStretch(1)
        buttons.addWidget(close_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.text_view, 1)
        layout.addWidget(self.summary)
        layout.addLayout(choices)
        layout.addLayout(find_row)
        layout.addLayout(buttons)
        self.render()

    def _direction_label(self, direction: Direction | None) -> str:
        if direction is None:
            size = sum(len(s.data) for s in self.stream.segments)
            return f"Entire conversation ({size:,} bytes)"
        return f"{self.stream.describe(direction)} ({len(self.stream.data(direction)):,} bytes)"

    def selected_direction(self) -> Direction | None:
        return self.direction.currentData()

    def set_direction(self, direction: Direction | None) -> None:
        self.direction.setCurrentIndex(self.direction.findData(direction))

    def set_format(self, name: str) -> None:
        self.show_as.setCurrentText(name)

    def visible_segments(self) -> list[StreamSegment]:
        direction = self.selected_direction()
        return [s for s in self.stream.segments if direction is None or s.direction == direction]

    def render(self) -> None:
        kind = self.show_as.currentText()
        offsets = {Direction.CLIENT_TO_SERVER: 0, Direction.SERVER_TO_CLIENT: 0}
        parts = []
        for segment in self.visible_segments():
            client = segment.direction == Direction.CLIENT_TO_SERVER
            if segment.missing:
                text = f"[{segment.missing:,} bytes missing in capture]\n"
                style = GAP_STYLE
            elif kind == "ASCII":
                text, style = _ascii(segment.data), CLIENT_STYLE if client else SERVER_STYLE
            elif kind == "Hex dump":
                text = _hex_dump(segment.data, offsets[segment.direction], "" if client else "    ")
                style = CLIENT_STYLE if client else SERVER_STYLE
            else:
                text, style = segment.data.hex() + "\n", CLIENT_STYLE if client else SERVER_STYLE
            offsets[segment.direction] += len(segment.data) + segment.missing
            parts.append(f'<span style="{style}">{html.escape(text)}</span>')
        self.text_view.setHtml(f"<pre style='margin:0'>{''.join(parts)}</pre>")
        self._summarise()

    def _summarise(self) -> None:
        stream = self.stream
        sent = {d: sum(1 for s in stream.segments if s.direction == d and s.data) for d in Direction}
        notes = [f"{len(stream.rows):,} packets",
                 f"{sent[Direction.CLIENT_TO_SERVER]:,} client segments (red)",
                 f"{sent[Direction.SERVER_TO_CLIENT]:,} server segments (blue)"]
        missing = stream.missing(Direction.CLIENT_TO_SERVER) + stream.missing(Direction.SERVER_TO_CLIENT)
        if missing:
            notes.append(f"{missing:,} bytes missing")
        if stream.duplicate_bytes:
            notes.append(f"{stream.duplicate_bytes:,} bytes retransmitted")
        self.summary.setText(" · ".join(notes))

    def text(self) -> str:
        return self.text_view.toPlainText()

    def find_next(self) -> bool:
        """Selects the next occurrence of the find text, wrapping around once."""
        needle = self.find_edit.text()
        if not needle:
            return False
        if self.text_view.find(needle):
            return True
        cursor = self.text_view.textCursor()
        cursor.movePosition(cursor.MoveOperation.Start)
        self.text_view.setTextCursor(cursor)
        found = self.text_view.find(needle)
        if not found:
            self.summary.setText(f"{needle!r} is not in the stream")
        return found

    def show_only(self) -> None:
        self.filter_requested.emit(self.stream.filter_text(self.selected_direction()))

    def filter_out(self) -> None:
        self.filter_requested.emit(self.stream.excluding_filter_text())

