"""Follow TCP stream, Conversations and Endpoints, driven on the demo network as a user would."""

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QPushButton

from divertgui.engine.conversations import conversations
from divertgui.engine.headers import parse_headers
from divertgui.engine.streams import Direction, follow_stream
from divertgui.views.conversations_dialog import ConversationsDialog
from divertgui.views.follow_stream_dialog import FollowStreamDialog
from tests.gui.conftest import start_demo


def shown_rows(window) -> list[int]:
    model = window.table_model
    return [model.store_row(r) for r in range(model.rowCount())]


def http_response_row(store, count: int) -> int | None:
    """The first stored packet that starts an HTTP response, when its request is stored too."""
    for row in range(count):
        raw = store.raw(row)
        layout = parse_headers(raw)
        if layout and layout.transport == 6 and raw[layout.payload_offset:].startswith(b"HTTP/1.1 200"):
            return row
    return None


def stopped_with_an_http_exchange(qtbot, workbench) -> int:
    window, store = workbench.window, workbench.store
    start_demo(qtbot, workbench, rows=20)
    qtbot.waitUntil(lambda: http_response_row(store, len(store)) is not None, timeout=20000)
    window.stop_capture()
    qtbot.waitUntil(lambda: not window.running and window.count == len(store), timeout=10000)
    return http_response_row(store, window.count)


def test_follow_an_http_stream_then_filter_it_out(qtbot, workbench):
    window, store = workbench.window, workbench.store
    response = stopped_with_an_http_exchange(qtbot, workbench)
    window.navigation.go_to_packet(response + 1)
    assert window.streams.follow_tcp_action.shortcut() == QKeySequence("Ctrl+Alt+Shift+T")
    window.table.setFocus()
    qtbot.keyClick(window.table, Qt.Key.Key_T, Qt.KeyboardModifier.ControlModifier
                   | Qt.KeyboardModifier.AltModifier | Qt.KeyboardModifier.ShiftModifier)
    dialogs = window.findChildren(FollowStreamDialog)
    assert len(dialogs) == 1
    dialog = dialogs[0]
    qtbot.addWidget(dialog)
    text = dialog.text()
    assert "GET /" in text and "HTTP/1.1 200 OK" in text
    assert text.index("GET /") < text.index("HTTP/1.1 200 OK")
    assert dialog.stream.server[1] == 80

    dialog.set_direction(Direction.SERVER_TO_CLIENT)
    assert "HTTP/1.1 200 OK" in dialog.text() and "GET /" not in dialog.text()
    dialog.set_direction(None)
    dialog.set_format("Hex dump")
    assert "48 54 54 50 2f 31 2e 31" in dialog.text()     # "HTTP/1.1"
    dialog.set_format("Raw")
    assert "485454502f312e3120323030" in dialog.text()
    dialog.set_format("ASCII")
    dialog.find_edit.setText("Content-Length")
    qtbot.keyClick(dialog.find_edit, Qt.Key.Key_Return)
    assert dialog.text_view.textCursor().selectedText() == "Content-Length"

    stream_rows = dialog.stream.rows.tolist()
    qtbot.mouseClick(dialog.only_button, Qt.MouseButton.LeftButton)
    assert window.display_filter.text() == dialog.stream.filter_text()
    assert shown_rows(window) == stream_rows

    qtbot.mouseClick(dialog.exclude_button, Qt.MouseButton.LeftButton)
    assert window.display_filter.text() == dialog.stream.excluding_filter_text()
    assert window.display_filter.is_valid()
    rest = shown_rows(window)
    assert rest and not set(rest) & set(stream_rows)
    assert len(rest) + len(stream_rows) == window.count - sum(
        1 for row in range(window.count) if parse_headers(store.raw(row)) is None)


def test_following_a_packet_without_a_stream_says_why(qtbot, workbench):
    window, store = workbench.window, workbench.store
    stopped_with_an_http_exchange(qtbot, workbench)
    protocols = store.column("protocol", 0, window.count)
    udp = int(np.flatnonzero(protocols == 17)[0])
    window.navigation.go_to_packet(udp + 1)
    assert window.streams.follow_stream("TCP") is None
    assert "is UDP, not TCP" in window.statusBar().currentMessage()
    dialog = window.streams.follow_stream("UDP")
    qtbot.addWidget(dialog)
    assert dialog.stream.protocol_name == "UDP"
    assert dialog.stream.rows.tolist() == follow_stream(store, udp).rows.tolist()
    others = np.flatnonzero((protocols != 6) & (protocols != 17))
    if len(others):
        window.navigation.go_to_packet(int(others[0]) + 1)
        assert window.streams.follow_stream() is None
        assert "not a TCP or UDP packet" in window.statusBar().currentMessage()


def test_conversations_sort_and_apply_as_filter(qtbot, workbench):
    window, store = workbench.window, workbench.store
    stopped_with_an_http_exchange(qtbot, workbench)
    dialog = window.streams.conversations_dialog()
    qtbot.addWidget(dialog)
    expected = conversations(store, np.arange(window.count))
    model = dialog.conversation_model
    assert model.rowCount() == len(expected) > 1
    bytes_column = next(c for c in range(model.columnCount()) if model.headerData(c, Qt.Orientation.Horizontal)
                        == "Bytes")
    dialog.conversation_table.sortByColumn(bytes_column, Qt.SortOrder.DescendingOrder)
    sizes = [int(model.index(r, bytes_column).data().replace(",", "")) for r in range(model.rowCount())]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == int(expected.bytes.max())

    dialog.conversation_table.selectRow(0)
    qtbot.mouseClick(dialog.findChild(QPushButton, "apply_as_filter"), Qt.MouseButton.LeftButton)
    entry = model.entry(0)
    assert window.display_filter.text() == dialog.conversations.filter(entry)
    assert window.table_model.rowCount() == int(dialog.conversations.packets[entry])

    # Limited to the display filter, the only conversation left is the one applied.
    dialog.displayed_only.setChecked(True)
    assert model.rowCount() == 1

    dialog.displayed_only.setChecked(False)
    dialog.show_tab(ConversationsDialog.ENDPOINTS)
    endpoint_model = dialog.endpoint_model
    dialog.endpoint_table.sortByColumn(1, Qt.SortOrder.DescendingOrder)
    busiest = endpoint_model.entry(0)
    assert int(dialog.endpoints.packets[busiest]) == int(dialog.endpoints.packets.max())
    dialog.endpoint_table.selectRow(0)
    dialog.apply_as_filter()
    address = dialog.endpoints.address(busiest)
    assert address in window.display_filter.text()
    assert window.table_model.rowCount() == int(dialog.endpoints.packets[busiest])
