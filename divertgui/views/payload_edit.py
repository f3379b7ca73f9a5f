"""The payload as editable text: one line per line of the payload, escapes for the rest.

A line break in the editor is a newline byte (LF); `\\r`, `\\t`, `\\\\` and
`\\xNN` stand for CR, tab, a backslash and any byte. Printable ASCII is shown as
it is, every other byte as `\\xNN`; a character typed beyond ASCII is sent as
its UTF-8 bytes. An HTTP request reads as it does on the wire, a line each.
"""

from __future__ import annotations

import html

from PySide6.QtGui import QFont, QFontMetrics
from PySide6.QtWidgets import QPlainTextEdit

from divertgui.views.position_error import PositionError

_SHOWN = {0x0A: "\n", 0x0D: "\\r", 0x09: "\\t", 0x5C: "\\\\"}
_ESCAPES = {"r": 0x0D, "n": 0x0A, "t": 0x09, "\\": 0x5C, "0": 0x00}
HINT_ESCAPES = "Enter is \\n; \\r \\t \\\\ \\xNN escapes"


class PayloadSyntaxError(PositionError):
    """Bad payload text."""


def payload_text(payload: bytes) -> str:
    return "".join(_SHOWN.get(b) or (chr(b) if 32 <= b < 127 else f"\\x{b:02x}") for b in payload)


def payload_bytes(text: str) -> bytes:
    out = bytearray()
    at = 0
    while at < len(text):
        char = text[at]
        if char != "\\":
            out += char.encode("utf-8")
            at += 1
            continue
        code = text[at + 1:at + 2]
        if code in _ESCAPES:
            out.append(_ESCAPES[code])
            at += 2
        elif code == "x":
            digits = text[at + 2:at + 4]
            if len(digits) < 2 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise PayloadSyntaxError("truncated \\xXX escape (two hex digits expected)", at)
            out.append(int(digits, 16))
            at += 4
        else:
            raise PayloadSyntaxError(f"unknown escape \\{code or '(end)'}; write \\\\ for a backslash", at)
    return bytes(out)


def payload_hint(text: str) -> str:
    """The line under the payload: its length as it would be sent, or why it cannot be."""
    try:
        size = len(payload_bytes(text))
    except PayloadSyntaxError as exc:
        return f"<small style='color: #a00000'>not valid: {html.escape(str(exc))}</small>"
    return f"<small>{size} byte{'' if size == 1 else 's'}; {html.escape(HINT_ESCAPES)}</small>"


class PayloadEdit(QPlainTextEdit):
    """A multi-line payload editor; text()/setText() as on the other fields of the form."""

    VISIBLE_LINES = 6

    def __init__(self, text: str = "", parent=None):
        super().__init__(parent)
        self.setFont(QFont("DejaVu Sans Mono", 9))
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.setTabChangesFocus(True)
        lines = QFontMetrics(self.font()).lineSpacing() * self.VISIBLE_LINES
        self.setMinimumHeight(lines + 2 * int(self.document().documentMargin()) + 4)
        self.setPlainText(text)

    def text(self) -> str:
        return self.toPlainText()

    def setText(self, text: str) -> None:
        self.setPlainText(text)
