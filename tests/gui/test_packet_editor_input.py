"""The packet editor's input: hex checked as typed with an ASCII column beside it, a
multi-line payload with escapes, and a form that fits its panel."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox

from divertgui.engine.address import Address
from divertgui.engine.packet import Packet
from divertgui.engine.store import CaptureStore
from divertgui.models.intercept_queue import InterceptQueueModel
from divertgui.views.intercept_panel import InterceptPanel
from divertgui.views.packet_editor import PacketEditor
from divertgui.views.payload_edit import PayloadSyntaxError, payload_bytes, payload_text
from divertgui.views.window_layout import SIDE_RANGE
from tests.gui.test_field_form import tcp_ipv4
from tests.gui.test_polish import posted, post_into  # noqa: F401  (fixtures)

HTTP = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"


@pytest.fixture
def held_panel(qtbot, posted):  # noqa: F811
    store = CaptureStore()
    queue = InterceptQueueModel(store)
    store.append(tcp_ipv4(), Address(outbound=True), 3, 0)
    panel = InterceptPanel(store, queue, post_into(posted))
    qtbot.addWidget(panel)
    panel.resize(SIDE_RANGE[0], 900)
    panel.show()
    queue.apply_event({"held": [{"id": 1, "row": 0}]})
    qtbot.waitUntil(lambda: panel.current_id == 1)
    return panel


def test_bad_hex_is_red_as_typed_with_its_position_and_forward_waits(qtbot, held_panel):
    panel = held_panel
    editor = panel.editor
    editor.tabs.setCurrentIndex(1)
    assert panel.forward_button.isEnabled()
    editor.hex.moveCursor(editor.hex.textCursor().MoveOperation.Start)
    qtbot.keyClicks(editor.hex, "zz ")
    assert not editor.is_valid()
    assert "fbd3d3" in editor.hex.styleSheet()
    message = editor.hex_pane.message
    assert message.isVisible() and message.text() == "Not valid hex: position 0: 'z' is not a hex digit"
    assert not panel.forward_button.isEnabled()
    qtbot.keyClick(editor.hex, Qt.Key.Key_Backspace)
    qtbot.keyClick(editor.hex, Qt.Key.Key_Backspace)
    qtbot.keyClick(editor.hex, Qt.Key.Key_Backspace)
    assert editor.is_valid() and not message.isVisible()
    assert panel.forward_button.isEnabled()


def test_the_hex_tab_has_an_ascii_column_line_for_line(qtbot, held_panel):
    editor = held_panel.editor
    editor.tabs.setCurrentIndex(1)
    raw = tcp_ipv4()
    hex_lines = editor.hex.toPlainText().split("\n")
    ascii_lines = editor.hex_pane.ascii.toPlainText().split("\n")
    per_line = editor.hex.bytes_per_line
    assert len(ascii_lines) == len(hex_lines) == (len(raw) + per_line - 1) // per_line
    assert "".join(ascii_lines) == "".join(chr(b) if 32 <= b < 127 else "." for b in raw)
    assert "GET / HTTP/1.0" in "".join(ascii_lines)
    editor.hex.setPlainText(hex_lines[0][:-2] + "zz")
    assert editor.hex_pane.ascii.toPlainText().endswith("?")


def test_the_payload_is_a_multi_line_text_with_escapes(qtbot):
    editor = PacketEditor()
    qtbot.addWidget(editor)
    segment = Packet(bytearray(tcp_ipv4()))
    segment.payload = HTTP
    segment.fix_lengths_and_checksums()
    editor.set_packet(segment.raw, Address(outbound=True))
    payload = editor.form.field("payload", "bytes")
    assert payload.document().blockCount() == 4
    assert payload.text() == "GET / HTTP/1.1\\r\nHost: example\\r\n\\r\n"
    payload.setText("GET /x HTTP/1.1\\r\nHost: example\\r\n\\r\n\\x00\\\\")
    assert Packet(editor.edited()).payload == b"GET /x HTTP/1.1\r\nHost: example\r\n\r\n\x00\\"
    assert payload_bytes(payload_text(bytes(range(256)))) == bytes(range(256))
    with pytest.raises(PayloadSyntaxError, match="position 3: truncated"):
        payload_bytes("abc\\x4")


def test_the_form_fits_the_narrowest_side_panel_and_no_flag_name_is_cut(qtbot, held_panel):
    editor = held_panel.editor
    scroll = editor.scroll
    qtbot.waitUntil(lambda: editor.form.width() > 0)
    qtbot.wait(50)
    assert editor.form.width() <= scroll.viewport().width()
    assert not scroll.horizontalScrollBar().isVisible()
    checks = [widget for widget in editor.form.findChildren(QCheckBox)]
    assert len(checks) >= 9
    for check in checks:
        right = check.mapTo(editor.form, check.rect().topRight()).x()
        assert check.width() >= check.sizeHint().width(), check.text()
        assert right <= editor.form.width(), check.text()
