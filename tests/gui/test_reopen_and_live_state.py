"""A saved capture comes back as it was saved; the Mode survives File > Open; the
Save dialog proposes a dated name; charts and rates move on when traffic stops;
loss is shown while it happens."""

from __future__ import annotations

import re

from PySide6.QtWidgets import QFileDialog

from divertgui.engine import pcapng
from divertgui.engine.address import Address
from divertgui.engine.packet import Packet
from divertgui.engine.store import Verdict
from divertgui.models.packet_table import PROTOCOL, TIME, VERDICT
from tests.gui.conftest import start_demo

RECORDED_START_NS = 1_750_000_000_000_000_000


def udp_packet(payload: bytes = b"hello") -> bytes:
    total = 28 + len(payload)
    header = bytes.fromhex("4500") + total.to_bytes(2, "big") + bytes.fromhex("0000400040110000c0a80001c0a80002")
    udp = bytes.fromhex("d4310035") + (8 + len(payload)).to_bytes(2, "big") + bytes(2) + payload
    packet = Packet(bytearray(header + udp))
    packet.recalculate_checksums()
    return bytes(packet.raw)


def hold_edit_and_forward(qtbot, window):
    panel = window.intercept
    panel.filter.set_text("tcp and tcp.PayloadLength > 0")
    panel.filter.submit()
    qtbot.waitUntil(lambda: window.queue_model.rowCount() > 0, timeout=10000)
    panel.filter.set_text("false")
    panel.filter.submit()
    qtbot.waitUntil(lambda: panel.current_id is not None)
    row = window.queue_model.store_row(window.queue_model.row_of(panel.current_id))
    port = panel.editor.form.field("tcp", "dst_port")
    port.setText(str((int(port.text()) + 1) % 65536))
    panel.forward()
    qtbot.waitUntil(lambda: window.store.verdict(row) == Verdict.MODIFIED, timeout=5000)
    return row


def test_a_saved_capture_reopens_with_its_times_modified_mark_original_bytes_and_charts(
        qtbot, workbench, tmp_path):
    window = workbench.window
    start_demo(qtbot, workbench, rows=60)
    modified_row = hold_edit_and_forward(qtbot, window)
    qtbot.waitUntil(lambda: workbench.store.value("timestamp", window.count - 1)
                    - workbench.store.value("timestamp", 0) > 1_000_000_000, timeout=10000)
    window.stop_capture()
    qtbot.waitUntil(lambda: not window.running and window.count == len(workbench.store), timeout=5000)
    store = workbench.store
    count = window.count
    sent = store.raw(modified_row)
    original = store.original(modified_row)
    wall = list(store.column("wall_ns", 0, count))
    path = tmp_path / "edited.pcapng"
    assert window.files.save_capture(str(path)) == count

    before = store.generation
    window.files.open_capture(str(path))
    qtbot.waitUntil(lambda: window.generation != before and window.count == count, timeout=10000)
    assert list(store.column("wall_ns", 0, count)) == wall
    # The Time column counts from the first recorded packet, not from the moment of opening.
    last = window.table_model.index(count - 1, TIME).data()
    assert float(last) == round((wall[-1] - wall[0]) / 1e9, 6)
    assert float(last) > 1.0
    assert store.verdict(modified_row) == Verdict.MODIFIED
    assert window.table_model.index(modified_row, VERDICT).data() == "modified"
    assert store.raw(modified_row) == sent
    assert store.original(modified_row) == original
    assert [store.verdict(r) for r in range(count) if r != modified_row] == \
        [Verdict.PASSED] * (count - 1)
    qtbot.waitUntil(lambda: window.stats.total_packets == count, timeout=5000)
    x, packets, *_ = window.stats.window(60)
    assert len(x) >= 2 and packets.sum() > 0
    assert window.charts.packets_stack.curves[0].getData()[0] is not None


def test_the_mode_chosen_survives_opening_a_file_and_the_window_says_which(qtbot, workbench, tmp_path):
    window = workbench.window
    path = tmp_path / "one.pcapng"
    pcapng.write_capture(path, [(udp_packet(), Address(outbound=True), RECORDED_START_NS)])
    window.mode.setCurrentText("divert")
    window.files.open_capture(str(path))
    qtbot.waitUntil(lambda: window.count == 1, timeout=5000)
    assert window.mode.currentText() == "divert"
    assert "one.pcapng" in window.status_line.labels["state"].text()
    window.start_capture()
    qtbot.waitUntil(lambda: window.running and window.count > 5, timeout=10000)
    assert workbench.bridge.session._mode == "divert"
    assert "divert mode" in window.status_line.labels["state"].text()
    # A capture started after opening a file starts from an empty list.
    assert workbench.store.value("wall_ns", 0) != RECORDED_START_NS


def test_a_packet_with_a_corrupt_version_byte_is_a_malformed_row(qtbot, workbench, tmp_path):
    window = workbench.window
    good = udp_packet()
    corrupt = bytes([0x95]) + good[1:]
    path = tmp_path / "corrupt.pcapng"
    pcapng.write_capture(path, [(good, Address(), RECORDED_START_NS),
                                (corrupt, Address(), RECORDED_START_NS + 1_000_000),
                                (good, Address(), RECORDED_START_NS + 2_000_000)])
    window.files.open_capture(str(path))
    qtbot.waitUntil(lambda: window.count == 3, timeout=5000)
    assert window.table_model.index(1, PROTOCOL).data() == "Malformed"
    assert window.table_model.index(1, VERDICT).data() != "passed"
    assert workbench.store.raw(1) == corrupt
    assert "1 malformed" in window.statusBar().currentMessage()


def test_the_save_dialog_proposes_a_dated_file_name(qtbot, workbench, monkeypatch, tmp_path):
    window = workbench.window
    start_demo(qtbot, workbench, rows=5)
    window.stop_capture()
    proposed = []

    def answer(_parent, _caption, directory, _filter):
        proposed.append(directory)
        return "", ""

    monkeypatch.setattr(QFileDialog, "getSaveFileName", answer)
    window.files.save_dialog()
    assert proposed, "the Save dialog was not opened"
    assert re.search(r"divertgui_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d\.pcapng$", proposed[0]), proposed[0]


def test_rates_and_the_time_axis_move_on_when_traffic_stops(qtbot, workbench):
    window = workbench.window
    start_demo(qtbot, workbench, rows=40)
    qtbot.waitUntil(lambda: window.stats.rates()[0] > 0, timeout=10000)
    window.post("set_rate", rate=0.0)
    bins = window.stats.bins
    qtbot.waitUntil(lambda: window.stats.rates()[0] == 0 and window.stats.bins >= bins + 4, timeout=10000)
    qtbot.waitUntil(lambda: window.status_line.labels["rate"].text().startswith("0 pkt/s"), timeout=2000)
    x, packets, *_ = window.stats.window(60)
    assert packets[:, -1].sum() == 0


def test_loss_shows_a_banner_and_a_red_counter_while_it_happens(qtbot, workbench):
    window = workbench.window
    window.handle_event({"type": "rows", "count": 0, "generation": workbench.store.generation,
                         "stats": {"overflowed": 37, "lost_messages": 0}})
    assert window.loss_banner.isVisible()
    assert "37 packets lost" in window.loss_banner.label.text()
    assert "queue was full" in window.loss_banner.label.text()
    assert window.status_line.labels["lost"].text() == "Lost 37"
    assert "c62828" in window.status_line.labels["lost"].styleSheet()
