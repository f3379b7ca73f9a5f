"""The one filter editor: capture, display, intercept and rule filters all use it.

Highlights the language as it is typed, completes fields and macros, checks
the text with the engine's compiler on every keystroke (green / red before
Enter, the error position underlined, the message shown) and keeps a history
and presets.
"""

from __future__ import annotations

import os
import re
from typing import Callable

from PySide6.QtCore import QEvent, QSettings, QStandardPaths, QStringListModel, Qt, Signal
from PySide6.QtGui import (QColor, QFont, QFontMetrics, QSyntaxHighlighter,
                           QTextCharFormat, QTextCursor, QTextOption)
from PySide6.QtWidgets import (QCompleter, QHBoxLayout, QLabel, QMenu, QPlainTextEdit,
                               QSizePolicy, QToolButton, QVBoxLayout, QWidget)

from divertgui.views import filter_vocabulary as vocab

# (message, position, suggestion or None), or None when the text is valid.
Validator = Callable[[str], "tuple[str, int, str | None] | None"]

HISTORY_LENGTH = 20
PRESETS_FILE = "filter-presets.txt"
VALID_COLOUR = QColor("#d7f5d3")
INVALID_COLOUR = QColor("#fbd3d3")
NEUTRAL_COLOUR = QColor("#ffffff")
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*(\[-?\d+b?\])?|0x[0-9A-Fa-f]+|\d[\d.:a-fA-F]*|&&|\|\||==|!=|<=|>=|[=<>!?:()-]")


def engine_validator(layer_name: str = "NETWORK") -> Validator:
    """Checks text with the engine's compiler at the given layer."""

    def validate(text: str):
        from divertgui.engine.address import Layer
        from divertgui.engine.filter import FilterError, compile_filter
        try:
            compile_filter(text, Layer[layer_name])
        except FilterError as exc:
            return exc.message, exc.position, exc.suggestion
        return None

    return validate


class FilterHighlighter(QSyntaxHighlighter):
    def __init__(self, document):
        super().__init__(document)
        self.error_position: int | None = None
        self._formats = {
            "keyword": self._format("#7a1fa2", bold=True),
            "field": self._format("#1c5fb0"),
            "macro": self._format("#a0522d", bold=True),
            "number": self._format("#2e7d32"),
            "operator": self._format("#555555"),
        }
        self._fields = {f.split("[")[0] for f in vocab.NETWORK_FIELDS}
        self._macros = set(vocab.MACROS)
        self._keywords = set(vocab.KEYWORDS)

    @staticmethod
    def _format(colour: str, bold: bool = False) -> QTextCharFormat:
        fmt = QTextCharFormat()
        fmt.setForeground(QColor(colour))
        if bold:
            fmt.setFontWeight(QFont.Weight.Bold)
        return fmt

    def _kind(self, token: str) -> str | None:
        word = token.split("[")[0]
        if word in self._keywords:
            return "keyword"
        if word in self._fields:
            return "field"
        if word in self._macros:
            return "macro"
        if token[0].isdigit():
            return "number"
        if not token[0].isalpha() and token[0] != "_":
            return "keyword" if token in ("&&", "||", "!") else "operator"
        return None

    def highlightBlock(self, text: str) -> None:
        for match in _TOKEN.finditer(text):
            kind = self._kind(match.group(0))
            if kind:
                self.setFormat(match.start(), match.end() - match.start(), self._formats[kind])
        if self.error_position is not None:
            start = min(self.error_position, max(len(text) - 1, 0))
            token = _TOKEN.match(text, start)
            length = max(1, token.end() - start) if token else 1
            for offset in range(start, start + length):
                fmt = self.format(offset) if offset < len(text) else QTextCharFormat()
                fmt.setUnderlineStyle(QTextCharFormat.UnderlineStyle.WaveUnderline)
                fmt.setUnderlineColor(QColor("#d00000"))
                if offset >= len(text):
                    fmt.setBackground(QColor("#f4a6a6"))
                self.setFormat(offset, 1, fmt)

    def set_error_position(self, position: int | None) -> None:
        if position != self.error_position:
            self.error_position = position
            self.rehighlight()


class FilterTextEdit(QPlainTextEdit):
    """A one-line QPlainTextEdit: a QLineEdit cannot carry per-character formats."""

    submitted = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self._placeholder = ""      # in full; shown shortened to the editor's width
        self.setWordWrapMode(QTextOption.WrapMode.NoWrap)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setTabChangesFocus(True)
        self.setFont(QFont("DejaVu Sans Mono", 10))
        metrics = QFontMetrics(self.font())
        self.setFixedHeight(metrics.height() + 2 * int(self.document().documentMargin()) + 6)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.words = QStringListModel(vocab.completion_words(), self)
        self.completer = QCompleter(self.words, self)
        self.completer.setWidget(self)
        self.completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.completer.setCompletionMode(QCompleter.CompletionMode.PopupCompletion)
        self.completer.activated.connect(self.insert_completion)

    def setPlaceholderText(self, text: str) -> None:
        self._placeholder = text
        self._fit_placeholder()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit_placeholder()

    def _fit_placeholder(self) -> None:
        # Qt wraps a plain text edit's placeholder, and a second line would be cut off:
        # a narrow editor shows it shortened to its one line instead.
        room = self.viewport().width() - 2 * int(self.document().documentMargin())
        super().setPlaceholderText(self.fontMetrics().elidedText(self._placeholder,
                                                                 Qt.TextElideMode.ElideRight, room))

    def word_before_cursor(self) -> str:
        text = self.toPlainText()[: self.textCursor().position()]
        match = re.search(r"[A-Za-z_][A-Za-z0-9_.]*$", text)
        return match.group(0) if match else ""

    def insert_completion(self, word: str) -> None:
        prefix = self.word_before_cursor()
        cursor = self.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.Left, QTextCursor.MoveMode.KeepAnchor, len(prefix))
        cursor.insertText(word)
        self.setTextCursor(cursor)

    def keyPressEvent(self, event) -> None:
        popup = self.completer.popup()
        if popup.isVisible() and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Tab,
                                                 Qt.Key.Key_Escape):
            event.ignore()
            return
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.submitted.emit()
            return
        if event.key() == Qt.Key.Key_Space and event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self.show_completions(force=True)
            return
        super().keyPressEvent(event)
        if event.text() and (event.text().isalnum() or event.text() in "._"):
            self.show_completions()
        else:
            popup.hide()

    def show_completions(self, force: bool = False) -> None:
        prefix = self.word_before_cursor()
        if not force and len(prefix) < 2:
            self.completer.popup().hide()
            return
        self.completer.setCompletionPrefix(prefix)
        if self.completer.completionCount() == 0:
            self.completer.popup().hide()
            return
        if self.completer.completionCount() == 1 and self.completer.currentCompletion() == prefix:
            self.completer.popup().hide()
            return
        rect = self.cursorRect()
        rect.setWidth(240)
        self.completer.complete(rect)

    def insertFromMimeData(self, source) -> None:
        self.insertPlainText(" ".join(source.text().split()))


def problem_text(message: str, position: int, suggestion: str | None) -> str:
    """A filter error as every filter box shows it: the position as the CLI counts it, and a
    suggestion when the engine has one."""
    text = f"position {position}: {message}"
    return f"{text}; did you mean `{suggestion}`?" if suggestion else text


class FloatingMessage(QLabel):
    """The error line under a filter box, drawn over what is below it: showing it never
    moves the packet list or anything else down."""

    def __init__(self, anchor: QWidget):
        super().__init__(anchor)
        self.anchor = anchor
        self.setObjectName("filter_message")
        self.setAutoFillBackground(True)
        self.setStyleSheet("QLabel { color: #a00000; background: #fff4f4; border: 1px solid #e0a0a0;"
                           " padding: 1px 4px; }")
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.hide()
        self._host: QWidget | None = None

    def show_text(self, text: str) -> None:
        self.setText(text)
        self.place()
        if self.anchor.isVisible():
            self.show()
            self.raise_()

    def place(self) -> None:
        host = self.anchor.window()
        if host is not self._host:
            if self._host is not None:
                self._host.removeEventFilter(self)
            self._host = host
            self.setParent(host)
            if host is not self.anchor:
                host.installEventFilter(self)
        self.adjustSize()
        if host is self.anchor:
            self.move(0, 0)
            return
        below = self.anchor.mapTo(host, self.anchor.rect().bottomLeft())
        width = min(max(self.anchor.width(), self.sizeHint().width()), max(host.width() - below.x(), 50))
        self.setFixedWidth(width)
        self.move(below.x(), below.y() + 1)

    def eventFilter(self, watched, event) -> bool:
        # The window was resized or laid out again: the box may have moved.
        if watched is self._host and event.type() in (QEvent.Type.Resize, QEvent.Type.LayoutRequest):
            if self.isVisible():
                self.place()
        return False


class FilterEditor(QWidget):
    """Filter text with live validation; `applied(text)` fires on Enter with a valid filter,
    `refused(reason)` on Enter with an invalid one."""

    applied = Signal(str)
    refused = Signal(str)
    validity_changed = Signal(bool)

    def __init__(self, purpose: str, validator: Validator | None = None, placeholder: str = "",
                 parent=None):
        super().__init__(parent)
        self.purpose = purpose
        self.validator = validator or engine_validator()
        self.error: tuple[str, int] | None = None
        self.suggestion: str | None = None
        self.edit = FilterTextEdit(self)
        self.edit.setPlaceholderText(placeholder)
        self.edit.setObjectName(f"{purpose}_filter")
        self.edit.setAccessibleName(f"{purpose} filter")
        self.highlighter = FilterHighlighter(self.edit.document())
        self.menu_button = QToolButton(self)
        self.menu_button.setText("▾")
        self.menu_button.setToolTip("Recent filters and presets")
        self.menu_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.menu_button.setMenu(QMenu(self))
        self.menu_button.menu().aboutToShow.connect(self._fill_menu)
        self.apply_button = QToolButton(self)
        self.apply_button.setText("Apply")
        self.apply_button.clicked.connect(self.submit)
        self.message = FloatingMessage(self)

        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(2)
        row.addWidget(self.edit, 1)
        row.addWidget(self.menu_button)
        row.addWidget(self.apply_button)
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.addLayout(row)

        self.edit.textChanged.connect(self.validate)
        self.edit.submitted.connect(self.submit)
        self.validate()

    # text ---------------------------------------------------------------
    def text(self) -> str:
        return self.edit.toPlainText().strip()

    def set_text(self, text: str) -> None:
        self.edit.setPlainText(" ".join(text.split()))
        self.edit.moveCursor(QTextCursor.MoveOperation.End)

    def set_validator(self, validator: Validator) -> None:
        self.validator = validator
        self.validate()

    def is_valid(self) -> bool:
        return self.error is None

    # validation ---------------------------------------------------------
    def validate(self) -> None:
        text = self.edit.toPlainText()
        was_valid = self.error is None
        problem = self.validator(text.strip()) if text.strip() else None
        self.error, self.suggestion = None, None
        if problem is not None:
            message, position, *rest = problem
            # Positions are into the stripped text; map back onto what is shown.
            position += len(text) - len(text.lstrip())
            self.error = (message, position)
            self.suggestion = rest[0] if rest else None
            self.highlighter.set_error_position(position)
            self.message.show_text(self.problem())
            self.edit.setToolTip(self.problem())
            self._paint(INVALID_COLOUR)
        else:
            self.highlighter.set_error_position(None)
            self.message.hide()
            self.edit.setToolTip("")
            self._paint(VALID_COLOUR if text.strip() else NEUTRAL_COLOUR)
        if was_valid != (self.error is None):
            self.validity_changed.emit(self.error is None)

    def problem(self) -> str:
        """What is wrong with the text and where, "" when it is valid."""
        if self.error is None:
            return ""
        return problem_text(*self.error, self.suggestion)

    def event(self, event) -> bool:
        kind = event.type()
        if kind == QEvent.Type.Hide:
            self.message.hide()
        elif kind in (QEvent.Type.Show, QEvent.Type.Move, QEvent.Type.Resize) and self.error is not None:
            self.message.show_text(self.problem())
        return super().event(event)

    def _paint(self, colour: QColor) -> None:
        self.edit.setStyleSheet(
            f"QPlainTextEdit {{ background: {colour.name()}; border: 1px solid #9a9a9a; border-radius: 3px; }}")

    def submit(self) -> None:
        self.validate()
        if self.error is not None:
            reason = f"not applied: {self.problem()}"
            self.message.show_text(reason)
            self.refused.emit(reason)
            return
        text = self.text()
        if text:
            self.remember(text)
        self.applied.emit(text)

    # history and presets --------------------------------------------------
    def _history_key(self) -> str:
        return f"filters/{self.purpose}/history"

    def history(self) -> list[str]:
        value = QSettings().value(self._history_key(), [])
        if isinstance(value, str):
            value = [value]
        return list(value or [])

    def remember(self, text: str) -> None:
        items = [text] + [item for item in self.history() if item != text]
        QSettings().setValue(self._history_key(), items[:HISTORY_LENGTH])

    @staticmethod
    def presets_path() -> str:
        """The user's presets: a text file, one filter a line, as Clumsy keeps them."""
        folder = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppConfigLocation)
        return os.path.join(folder, PRESETS_FILE)

    def user_presets(self) -> list[str]:
        try:
            with open(self.presets_path(), encoding="utf-8") as lines:
                return [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        except FileNotFoundError:
            return []

    def save_as_preset(self) -> None:
        text = self.text()
        if text and self.is_valid() and text not in self.user_presets():
            os.makedirs(os.path.dirname(self.presets_path()), exist_ok=True)
            with open(self.presets_path(), "a", encoding="utf-8") as lines:
                lines.write(text + "\n")

    def _fill_menu(self) -> None:
        menu = self.menu_button.menu()
        menu.clear()
        history = self.history()
        if history:
            menu.addSection("Recent")
            for text in history:
                menu.addAction(text, lambda t=text: self._choose(t))
        menu.addSection("Presets")
        for name, text in vocab.PRESETS:
            action = menu.addAction(f"{name}:  {text}", lambda t=text: self._choose(t))
            action.setToolTip(text)
        for text in self.user_presets():
            menu.addAction(f"★ {text}", lambda t=text: self._choose(t))
        menu.addSeparator()
        save = menu.addAction("Save current filter as preset", self.save_as_preset)
        save.setEnabled(bool(self.text()) and self.is_valid())

    def _choose(self, text: str) -> None:
        self.set_text(text)
        self.edit.setFocus()

    def focus(self) -> None:
        self.edit.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.edit.selectAll()
