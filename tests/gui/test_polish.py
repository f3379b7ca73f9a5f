"""Details the user guide's screenshots showed wrong: column widths, hints, layout and selections that must follow."""

from __future__ import annotations

import struct

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import QMainWindow, QTextEdit, QToolBar

from divertgui.engine.address import Address
from divertgui.engine.packet import Packet
from divertgui.engine.store import CaptureStore, Verdict
from divertgui.models.intercept_queue import COLUMNS, InterceptQueueModel
from divertgui.models.rules_model import RulesModel
from divertgui.views.filter_editor import FilterEditor
from divertgui.views.intercept_panel import InterceptPanel
from divertgui.views.packet_editor import PacketEditor
from divertgui.views.rules_panel import PRESET_PREFIX, RulesPanel

WALL_NS = 1_767_268_800 * 1_000_000_000


def udp4(src: bytes, payload: bytes) -> bytes:
    datagram = struct.pack("!HHHH", 40000, 53, 8 + len(payload), 0) + payload
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(datagram), 1, 0, 64, 17, 0,
                       src, bytes([10, 0, 0, 1])) + datagram


def tcp6(src: bytes, payload: bytes) -> bytes:
    segment = struct.pack("!HHIIBBHHH", 50000, 80, 1, 1, 5 << 4, 0x18, 1000, 0, 0) + payload
    return struct.pack("!IHBB16s16s", 6 << 28, len(segment), 6, 64, src, bytes(15) + b"\x01") + segment


def fixed(raw: bytes) -> bytes:
    packet = Packet(bytearray(raw), Address())
    packet.recalculate_checksums()
    return bytes(packet.raw)


@pytest.fixture
def posted():
    return []


def post_into(posted):
    return lambda command, **arguments: posted.append((command, arguments))


# -- intercept queue columns --------------------------------------------------------

def shown_in_full(table, column: int) -> bool:
    # Qt's own measure of the width the column's texts need.
    return table.columnWidth(column) >= table.sizeHintForColumn(column)


def test_held_queue_columns_widen_when_wider_rows_arrive(qtbot, posted):
    store = CaptureStore()
    store.append(fixed(udp4(bytes([10, 0, 0, 2]), b"q")), Address(), Verdict.HELD, WALL_NS)
    for number in range(1, 151):
        store.append(fixed(udp4(bytes([10, 0, 0, 3]), b"x")), Address(), Verdict.PASSED, WALL_NS + number)
    wide_source = bytes.fromhex("20010db8aaaabbbbccccddddeeee0010")
    store.append(fixed(tcp6(wide_source, b"GET / HTTP/1.1\r\n")), Address(ipv6=True), Verdict.HELD, WALL_NS + 151)
    queue = InterceptQueueModel(store)
    panel = InterceptPanel(store, queue, post_into(posted))
    qtbot.addWidget(panel)
    panel.resize(560, 600)
    panel.show()
    table = panel.table
    number, source, info = COLUMNS.index("No."), COLUMNS.index("Source"), COLUMNS.index("Info")

    queue.apply_event({"held": [{"id": 1, "row": 0}]})
    assert queue.index(0, number).data() == "1"
    assert shown_in_full(table, number) and shown_in_full(table, source)
    narrow = table.columnWidth(source)

    queue.apply_event({"held": [{"id": 2, "row": 151}]})
    assert queue.index(1, number).data() == "152"
    assert queue.index(1, source).data() == "2001:db8:aaaa:bbbb:cccc:dddd:eeee:10"
    for column in range(info):
        assert shown_in_full(table, column), f"column {COLUMNS[column]} cuts its text short"
    assert table.columnWidth(source) > narrow
    assert table.horizontalHeader().stretchLastSection(), "Info takes the width that is left"

    # A column the user dragged wider stays so; a narrower row does not shrink it.
    table.setColumnWidth(source, 400)
    queue.apply_event({"held": [{"id": 3, "row": 1}]})
    assert table.columnWidth(source) == 400


# -- packet editor payload hint ------------------------------------------------------

def test_payload_hint_counts_the_bytes_as_they_are_edited(qtbot):
    editor = PacketEditor()
    qtbot.addWidget(editor)
    editor.set_packet(fixed(udp4(bytes([10, 0, 0, 2]), b"hello")), Address())
    hint = editor.form.payload_hint
    assert hint.text().startswith("<small>5 bytes;")
    payload = editor.form.field("payload", "bytes")
    payload.setFocus()
    payload.moveCursor(QTextCursor.MoveOperation.End)
    qtbot.keyClicks(payload, " world")
    assert hint.text().startswith("<small>11 bytes;")
    payload.setText(r"a\r\n")
    assert hint.text().startswith("<small>3 bytes;"), "an escape counts as the one byte it stands for"
    payload.setText(r"a\x4")
    assert "not valid" in hint.text() and r"\xXX" in hint.text()
    payload.setText("")
    assert hint.text().startswith("<small>0 bytes;")


# -- filter editor in a toolbar ------------------------------------------------------

def test_the_error_line_covers_what_is_below_and_never_pushes_it_down(qtbot):
    window = QMainWindow()
    qtbot.addWidget(window)
    bar = QToolBar("Display filter", window)
    editor = FilterEditor("display", parent=window)
    bar.addWidget(editor)
    window.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)
    window.setCentralWidget(QTextEdit(window))
    window.resize(900, 400)
    window.show()
    qtbot.waitExposed(window)
    valid_height = bar.height()
    central_top = window.centralWidget().geometry().top()

    editor.set_text("tcp.DstPort == 443 or udp.Dstport == 53")
    assert not editor.is_valid() and editor.message.isVisible()
    qtbot.wait(50)
    assert bar.height() == valid_height
    assert window.centralWidget().geometry().top() == central_top
    below = editor.mapTo(window, editor.rect().bottomLeft()).y()
    assert editor.message.geometry().top() >= below, "the message sits under the filter box"
    assert editor.message.parentWidget() is window

    editor.set_text("tcp.DstPort == 443 or udp.DstPort == 53")
    assert editor.is_valid() and not editor.message.isVisible()
    assert bar.height() == valid_height


# -- rules panel profile combo -------------------------------------------------------

def test_loading_a_profile_from_code_shows_it_in_the_combo(qtbot, posted):
    panel = RulesPanel(RulesModel(), post_into(posted))
    qtbot.addWidget(panel)
    combo = panel.profiles

    assert panel.load_profile(PRESET_PREFIX + "satellite")
    assert combo.currentText() == PRESET_PREFIX + "satellite"
    assert panel.load_profile("lossy-wifi"), "a preset by its bare name"
    assert combo.currentText() == PRESET_PREFIX + "lossy-wifi"
    rules = panel.model.to_dicts()

    assert panel.save_profile("my wifi")
    assert panel.load_profile(PRESET_PREFIX + "mobile-3g")
    assert combo.currentText() == PRESET_PREFIX + "mobile-3g"
    assert panel.load_profile("my wifi")
    assert combo.currentText() == "my wifi" and panel.model.to_dicts() == rules

    assert not panel.load_profile("no such profile")
    assert combo.currentText() == "my wifi", "a profile that failed to load is not shown as loaded"
    assert "no such profile" in panel.status.text()
