"""Hex + ASCII view of a packet's bytes; highlights a byte range and reports clicked bytes."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPlainTextEdit, QTextEdit, QVBoxLayout, QWidget

from divertgui.views.position_error import PositionError

BYTES_PER_LINE = 16
# "0000  " + 16 * "xx " + " " + 16 ASCII characters
_HEX_START = 6
_ASCII_START = _HEX_START + BYTES_PER_LINE * 3 + 1
_LINE_LENGTH = _ASCII_START + BYTES_PER_LINE


def hex_dump(data: bytes) -> str:
    lines = []
    for start in range(0, len(data), BYTES_PER_LINE):
        chunk = data[start:start + BYTES_PER_LINE]
        hex_part = " ".join(f"{b:02x}" for b in chunk).ljust(BYTES_PER_LINE * 3)
        ascii_part = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{start:04x}  {hex_part} {ascii_part}")
    return "\n".join(lines)


class HexView(QPlainTextEdit):
    """byte_clicked(offset) when the user clicks a byte, in the hex or the ASCII column."""

    byte_clicked = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setReadOnly(True)
        self.setFont(QFont("DejaVu Sans Mono", 9))
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.data = b""
        self.highlighted: tuple[int, int] | None = None
        self.cursorPositionChanged.connect(self._on_cursor)
        self._setting = False

    def set_data(self, data: bytes) -> None:
        self.data = bytes(data)
        self._setting = True
        self.setPlainText(hex_dump(self.data))
        self._setting = False
        self.highlight(None)

    def byte_at(self, line: int, column: int) -> int | None:
        if _HEX_START <= column < _HEX_START + BYTES_PER_LINE * 3:
            index = (column - _HEX_START) // 3
        elif _ASCII_START <= column < _LINE_LENGTH:
            index = column - _ASCII_START
        else:
            return None
        offset = line * BYTES_PER_LINE + index
        return offset if offset < len(self.data) else None

    def _on_cursor(self) -> None:
        if self._setting:
            return
        cursor = self.textCursor()
        offset = self.byte_at(cursor.blockNumber(), cursor.positionInBlock())
        if offset is not None:
            self.byte_clicked.emit(offset)

    def highlight(self, span: tuple[int, int] | None) -> None:
        """Highlights `length` bytes from `offset` in both columns; None clears."""
        self.highlighted = span
        selections = []
        if span is not None:
            offset, length = span
            end = min(offset + max(length, 1), len(self.data))
            fmt = QTextCharFormat()
            fmt.setBackground(QColor("#8fb8f0"))
            for start in range(offset, end):
                line, index = divmod(start, BYTES_PER_LINE)
                block = self.document().findBlockByNumber(line)
                for column, width in ((_HEX_START + index * 3, 2), (_ASCII_START + index, 1)):
                    cursor = QTextCursor(block)
                    cursor.setPosition(block.position() + column)
                    cursor.setPosition(block.position() + column + width, QTextCursor.MoveMode.KeepAnchor)
                    selection = QTextEdit.ExtraSelection()
                    selection.cursor = cursor
                    selection.format = fmt
                    selections.append(selection)
            if offset < len(self.data):
                line = offset // BYTES_PER_LINE
                self._scroll_to_line(line)
        self.setExtraSelections(selections)

    def _scroll_to_line(self, line: int) -> None:
        bar = self.verticalScrollBar()
        first = bar.value()
        visible = max(1, self.viewport().height() // max(1, self.fontMetrics().height()) - 1)
        if not first <= line < first + visible:
            bar.setValue(max(0, line - 1))


class HexError(PositionError):
    """Bad hex text."""


def parse_hex(text: str) -> bytes:
    """Hex digits in pairs, whitespace ignored; offset columns ("0000  ") and ASCII are not accepted."""
    digits = []
    for position, char in enumerate(text):
        if char.isspace():
            continue
        if char not in "0123456789abcdefABCDEF":
            raise HexError(f"{char!r} is not a hex digit", position)
        digits.append(char)
    if len(digits) % 2:
        raise HexError("odd number of hex digits", len(text))
    return bytes.fromhex("".join(digits))


def ascii_of_hex_line(line: str) -> str:
    """The ASCII column for one line of hex: a character per byte, "." when not printable,
    "?" for a pair that is not hex."""
    digits = "".join(line.split())
    shown = []
    for at in range(0, len(digits), 2):
        pair = digits[at:at + 2]
        try:
            value = int(pair, 16) if len(pair) == 2 else None
        except ValueError:
            value = None
        shown.append("?" if value is None else chr(value) if 32 <= value < 127 else ".")
    return "".join(shown)


def hex_lines(data: bytes, per_line: int) -> str:
    return "\n".join(" ".join(f"{b:02x}" for b in data[i:i + per_line]) for i in range(0, len(data), per_line))


class HexEditor(QPlainTextEdit):
    """Raw bytes as editable hex, `bytes_per_line` a line; checked as typed (`problem` says what
    is wrong and where, `validity_changed` fires when that changes)."""

    validity_changed = Signal(bool)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setFont(QFont("DejaVu Sans Mono", 9))
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.problem: HexError | None = None
        self.bytes_per_line = BYTES_PER_LINE
        self._loaded = b""
        self.textChanged.connect(self._check)

    def set_data(self, data: bytes) -> None:
        self._loaded = bytes(data)
        self.setPlainText(hex_lines(self._loaded, self.bytes_per_line))

    def set_bytes_per_line(self, count: int) -> None:
        """Lines of `count` bytes from now on; the bytes shown are laid out again unless the
        user has typed in them (their lines stay as typed)."""
        if count == self.bytes_per_line:
            return
        untouched = self.toPlainText() == hex_lines(self._loaded, self.bytes_per_line)
        self.bytes_per_line = count
        if untouched:
            self.setPlainText(hex_lines(self._loaded, count))

    def data(self) -> bytes:
        return parse_hex(self.toPlainText())

    def _check(self) -> None:
        was_valid = self.problem is None
        try:
            parse_hex(self.toPlainText())
            self.problem = None
        except HexError as exc:
            self.problem = exc
        self.setStyleSheet("" if self.problem is None else "QPlainTextEdit { background: #fbd3d3; }")
        if was_valid != (self.problem is None):
            self.validity_changed.emit(self.problem is None)


class HexPane(QWidget):
    """The hex editor with an ASCII column beside it, line for line, and the problem under it.
    Its lines hold 16 bytes, or 8 when 16 would not fit the pane's width."""

    def __init__(self, editor: HexEditor, parent=None):
        super().__init__(parent)
        self.editor = editor
        self.ascii = QPlainTextEdit(self)
        self.ascii.setObjectName("raw_ascii")
        self.ascii.setReadOnly(True)
        self.ascii.setFont(editor.font())
        self.ascii.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.ascii.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.message = QLabel(self)
        self.message.setObjectName("hex_problem")
        self.message.setStyleSheet("color: #a00000;")
        self.message.hide()
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(2)
        row.addWidget(editor, 1)
        row.addWidget(self.ascii)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(row, 1)
        layout.addWidget(self.message)
        editor.textChanged.connect(self._update)
        editor.verticalScrollBar().valueChanged.connect(self.ascii.verticalScrollBar().setValue)
        self._update()

    def _ascii_width(self, per_line: int) -> int:
        return QFontMetrics(self.editor.font()).horizontalAdvance("M" * (per_line + 2)) + 8

    def _fit_ascii(self) -> None:
        # As wide as the lines shown, which may be the user's own, up to 16 bytes a line.
        longest = max(map(len, self.ascii.toPlainText().split("\n")))
        self.ascii.setFixedWidth(self._ascii_width(max(self.editor.bytes_per_line, min(longest, BYTES_PER_LINE))))

    def width_for(self, per_line: int) -> int:
        """The pane's width that shows lines of `per_line` bytes without scrolling sideways."""
        editor = self.editor
        text = QFontMetrics(editor.font()).horizontalAdvance("0" * (3 * per_line - 1))
        margins = 2 * editor.frameWidth() + 2 * int(editor.document().documentMargin()) + 4
        return text + margins + editor.verticalScrollBar().sizeHint().width() + self.layout().spacing() \
            + self._ascii_width(per_line)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        per_line = BYTES_PER_LINE if self.width() >= self.width_for(BYTES_PER_LINE) else BYTES_PER_LINE // 2
        if per_line != self.editor.bytes_per_line:
            # Bytes laid out again come through textChanged; lines the user typed stay as they are.
            self.editor.set_bytes_per_line(per_line)
            self._fit_ascii()

    def _update(self) -> None:
        lines = self.editor.toPlainText().split("\n")
        self.ascii.setPlainText("\n".join(ascii_of_hex_line(line) for line in lines))
        self._fit_ascii()
        self.ascii.verticalScrollBar().setValue(self.editor.verticalScrollBar().value())
        problem = self.editor.problem
        self.message.setText("" if problem is None else f"Not valid hex: {problem}")
        self.message.setVisible(problem is not None)
