"""Hold a packet, edit it in the form and in hex, forward it, find it modified."""

from PySide6.QtCore import Qt

from divertgui.engine.packet import Packet
from divertgui.engine.store import Verdict
from divertgui.models.packet_table import VERDICT
from tests.gui.conftest import start_demo


def hold(qtbot, bench, text="tcp and tcp.PayloadLength > 0"):
    panel = bench.window.intercept
    panel.filter.set_text(text)
    qtbot.keyClick(panel.filter.edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: bench.window.queue_model.rowCount() > 0, timeout=10000)
    panel.filter.set_text("false")
    panel.filter.submit()
    qtbot.waitUntil(lambda: panel.current_id is not None)
    return panel


def checksums_valid(raw: bytes) -> bool:
    check = Packet(bytearray(raw))
    check.recalculate_checksums()
    return check.raw == raw


def test_hold_edit_port_and_payload_forward_and_find_it_modified(qtbot, workbench):
    window = workbench.window
    start_demo(qtbot, workbench)
    panel = hold(qtbot, workbench)
    hold_id = panel.current_id
    row = window.queue_model.store_row(window.queue_model.row_of(hold_id))
    assert workbench.store.verdict(row) == Verdict.HELD
    # The "held" event may come just before the "rows" event that shows the row.
    qtbot.waitUntil(lambda: window.table_model.view_row(row) is not None)
    view_row = window.table_model.view_row(row)
    assert window.table_model.index(view_row, VERDICT).data() == "held"
    original = workbench.store.raw(row)
    old_port = Packet(original).tcp.dst_port

    port_field = panel.editor.form.field("tcp", "dst_port")
    port_field.clear()
    qtbot.keyClicks(port_field, str(old_port ^ 0x100))
    payload_field = panel.editor.form.field("payload", "bytes")
    payload_field.clear()
    qtbot.keyClicks(payload_field, r"HELLO\r\n")
    assert panel.editor.fix.isChecked()
    qtbot.mouseClick(panel.forward_button, Qt.MouseButton.LeftButton)

    qtbot.waitUntil(lambda: window.queue_model.row_of(hold_id) is None, timeout=5000)
    qtbot.waitUntil(lambda: workbench.store.verdict(row) == Verdict.MODIFIED, timeout=5000)
    sent = workbench.store.raw(row)
    packet = Packet(sent)
    assert packet.tcp.dst_port == old_port ^ 0x100
    assert packet.payload == b"HELLO\r\n"
    assert packet.ip.length == len(sent) if packet.ip is not None else packet.ipv6.length == len(sent) - 40
    assert checksums_valid(sent)
    assert workbench.store.original(row) == original
    qtbot.waitUntil(lambda: window.table_model.index(view_row, VERDICT).data() == "modified")

    window.navigation.select_view_row(view_row)
    assert window.details.header.isVisible()
    window.details.version.setCurrentIndex(1)
    assert window.details.hex.data == original
    qtbot.keyClick(window.intercept.table, Qt.Key.Key_A, Qt.KeyboardModifier.ShiftModifier)


def test_hex_edit_and_keyboard_drop(qtbot, workbench):
    window = workbench.window
    start_demo(qtbot, workbench)
    panel = hold(qtbot, workbench, "udp")
    hold_id = panel.current_id
    row = window.queue_model.store_row(window.queue_model.row_of(hold_id))
    raw = bytearray(workbench.store.raw(row))
    panel.editor.tabs.setCurrentIndex(1)
    raw[8] = 7   # IPv4 TTL or IPv6 hop limit's neighbour: still a valid packet
    panel.editor.hex.set_data(bytes(raw))
    panel.editor.tabs.setCurrentIndex(0)
    assert panel.editor.is_changed()
    panel.editor.tabs.setCurrentIndex(1)
    panel.editor.hex.setPlainText("45 zz")
    panel.forward()
    assert panel.editor.error.isVisible() and "hex" in panel.editor.error.text()
    assert window.queue_model.row_of(hold_id) is not None

    panel.table.setFocus()
    qtbot.keyClick(panel.table, Qt.Key.Key_D)
    qtbot.waitUntil(lambda: window.queue_model.row_of(hold_id) is None, timeout=5000)
    assert workbench.store.verdict(row) == Verdict.DROPPED


def test_forward_all_drop_all_and_auto_timeout(qtbot, workbench):
    window = workbench.window
    start_demo(qtbot, workbench)
    panel = window.intercept
    panel.filter.set_text("icmp or icmpv6 or udp")
    panel.filter.submit()
    qtbot.waitUntil(lambda: window.queue_model.rowCount() >= 3, timeout=10000)
    panel.filter.set_text("false")
    panel.filter.submit()
    rows = [window.queue_model.store_row(r) for r in range(window.queue_model.rowCount())]
    qtbot.mouseClick(panel.drop_all_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.queue_model.rowCount() == 0, timeout=5000)
    assert all(workbench.store.verdict(r) == Verdict.DROPPED for r in rows)
    assert window.status_line.labels["held"].text() == "Held 0"

    panel.timeout.setValue(0.3)
    panel.timeout_action.setCurrentText("forward")
    panel.filter.set_text("udp")
    panel.filter.submit()
    qtbot.waitUntil(lambda: window.queue_model.rowCount() >= 1, timeout=10000)
    first = window.queue_model.store_row(0)
    panel.filter.set_text("false")
    panel.filter.submit()
    qtbot.waitUntil(lambda: workbench.store.verdict(first) == Verdict.PASSED, timeout=5000)
    qtbot.waitUntil(lambda: window.queue_model.rowCount() == 0, timeout=5000)


def test_bad_intercept_filter_is_refused_in_place(qtbot, workbench):
    panel = workbench.window.intercept
    panel.filter.set_text("tcp.Payload[0] == ")
    assert not panel.filter.is_valid()
    sent = []
    panel.filter.applied.connect(sent.append)
    panel.filter.submit()
    assert sent == []


def test_held_packets_survive_clear_and_can_still_be_forwarded(qtbot, workbench):
    window = workbench.window
    start_demo(qtbot, workbench)
    panel = hold(qtbot, workbench, "udp")
    hold_id = panel.current_id
    raw = workbench.store.raw(window.queue_model.store_row(window.queue_model.row_of(hold_id)))
    before = window.generation
    window.clear_action.trigger()
    qtbot.waitUntil(lambda: window.generation != before, timeout=5000)

    def listed_with_its_new_row():
        position = window.queue_model.row_of(hold_id)
        row = window.queue_model.store_row(position) if position is not None else len(workbench.store)
        return row < len(workbench.store) and workbench.store.raw(row) == raw

    qtbot.waitUntil(listed_with_its_new_row, timeout=5000)
    assert panel.current_id == hold_id
    panel.forward_unmodified()
    qtbot.waitUntil(lambda: window.queue_model.row_of(hold_id) is None, timeout=5000)


def test_the_intercept_panel_says_which_processes_it_holds_besides_its_filter(qtbot, workbench):
    window = workbench.window
    status = window.intercept.status
    window.intercept.set_intercept("udp")
    window.process_actions.hold_process(4242)
    assert status.text() == "Holding: udp; every packet of process 4242"
    window.intercept.set_intercept("")
    assert status.text() == "Holding every packet of process 4242"
    window.process_actions.hold_process(None)
    assert status.text() == "Holding nothing"


def test_a_capture_in_sniff_or_drop_mode_says_nothing_can_be_held(qtbot, workbench):
    window = workbench.window
    panel = window.intercept
    panel.filter.set_text("icmp or icmpv6 or udp")
    panel.filter.submit()
    assert panel.status.text() == "Holding: icmp or icmpv6 or udp"
    window.mode.setCurrentText("sniff")
    start_demo(qtbot, workbench)
    assert panel.status.text().startswith("Sniff mode: packets are copies and cannot be held; choose divert to hold")
    assert "Holding" not in panel.status.text() and "icmp or icmpv6 or udp" in panel.status.text()
    qtbot.waitUntil(lambda: window.count >= 100, timeout=10000)
    assert window.queue_model.rowCount() == 0
    window.stop_capture()
    qtbot.waitUntil(lambda: not window.running, timeout=5000)
    assert panel.status.text() == "Holding: icmp or icmpv6 or udp"

    window.mode.setCurrentText("drop")
    window.start_capture()
    qtbot.waitUntil(lambda: window.running, timeout=5000)
    assert panel.status.text().startswith("Drop mode: matching packets are dropped in the kernel and cannot be held")
    window.stop_capture()
    qtbot.waitUntil(lambda: not window.running, timeout=5000)

    window.mode.setCurrentText("divert")
    window.start_capture()
    qtbot.waitUntil(lambda: window.queue_model.rowCount() > 0, timeout=10000)
    assert panel.status.text() == "Holding: icmp or icmpv6 or udp"
    qtbot.mouseClick(panel.forward_all_button, Qt.MouseButton.LeftButton)


def test_the_editor_says_no_held_packet_is_selected_when_none_is(qtbot, workbench):
    window = workbench.window
    panel = window.intercept
    window.intercept_dock.raise_()

    def notice() -> str:
        return panel.editor.form.notice.text()

    assert notice() == "No held packet selected"
    start_demo(qtbot, workbench)
    hold(qtbot, workbench, "udp")
    assert panel.editor.form.notice is None and panel.editor.form.field("udp", "dst_port").text()
    qtbot.mouseClick(panel.forward_all_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.queue_model.rowCount() == 0, timeout=5000)
    assert panel.current_id is None and notice() == "No held packet selected"
    panel.editor.tabs.setCurrentIndex(1)
    panel.editor.tabs.setCurrentIndex(0)
    assert notice() == "No held packet selected"
    assert "IPv4/IPv6" not in notice()
