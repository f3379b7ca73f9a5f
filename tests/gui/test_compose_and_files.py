"""Compose and inject; save a capture, read it with tshark, open it again."""

import os
import shutil
import subprocess

import pytest
from PySide6.QtCore import Qt

from divertgui.engine.packet import Packet
from divertgui.engine.store import Verdict
from tests.gui.conftest import start_demo


def test_compose_from_template_and_inject_outbound(qtbot, workbench):
    window = workbench.window
    start_demo(qtbot, workbench)
    dialog = window.make_compose_dialog()
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.source.setCurrentText("DNS query (IPv4 UDP)")
    port = dialog.editor.form.field("udp", "dst_port")
    port.clear()
    qtbot.keyClicks(port, "5353")
    dialog.outbound.setChecked(True)
    before = window.count
    qtbot.mouseClick(dialog.inject_button, Qt.MouseButton.LeftButton)
    assert "Injected" in dialog.result.text()

    def injected_rows():
        verdicts = workbench.store.column("verdict", before, window.count)
        return [before + i for i, v in enumerate(verdicts) if v == Verdict.INJECTED]

    qtbot.waitUntil(lambda: bool(injected_rows()), timeout=5000)
    row = injected_rows()[0]
    packet = Packet(workbench.store.raw(row), workbench.store.address(row))
    assert packet.udp.dst_port == 5353
    assert packet.address.outbound
    check = Packet(bytearray(packet.raw))
    check.recalculate_checksums()
    assert check.raw == packet.raw


def test_compose_from_the_selected_packet_inbound(qtbot, workbench):
    window = workbench.window
    start_demo(qtbot, workbench)
    window.navigation.go_to_packet(5)
    selected = workbench.store.raw(4)
    dialog = window.make_compose_dialog()
    qtbot.addWidget(dialog)
    assert dialog.source.currentText() == "Selected packet"
    assert dialog.editor.raw == selected
    dialog.inbound.setChecked(True)
    before = window.count
    dialog.inject()
    qtbot.waitUntil(lambda: any(
        v == Verdict.INJECTED for v in workbench.store.column("verdict", before, window.count)), timeout=5000)
    verdicts = workbench.store.column("verdict", before, window.count)
    row = before + [i for i, v in enumerate(verdicts) if v == Verdict.INJECTED][0]
    assert workbench.store.raw(row) == selected
    assert not workbench.store.address(row).outbound


def tshark_fields(path, *fields):
    command = ["tshark", "-r", str(path), "-T", "fields"]
    for field in fields:
        command += ["-e", field]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [line.split("\t") for line in result.stdout.splitlines()]


def test_save_read_by_tshark_and_reopen(qtbot, workbench, tmp_path):
    if shutil.which("tshark") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tshark is not installed (Debian package tshark)")
        pytest.skip("tshark is not installed (Debian package tshark)")
    window = workbench.window
    start_demo(qtbot, workbench, rows=80)
    window.stop_capture()
    qtbot.waitUntil(lambda: not window.running and window.count == len(workbench.store), timeout=5000)
    count = window.count
    outbound = workbench.store.column("outbound", 0, count)
    saved = [workbench.store.raw(r) for r in range(count)]
    path = tmp_path / "capture.pcapng"
    assert window.files.save_capture(str(path)) == count
    rows = tshark_fields(path, "frame.number", "frame.packet_flags_direction")
    assert len(rows) == count
    # pcapng epb_flags: 1 inbound, 2 outbound.
    assert [int(direction, 16) for _number, direction in rows] == [2 if o else 1 for o in outbound]
    assert window.files.recent_files()[0] == str(path)

    window.table.selectRow(2)
    window.table.selectionModel().select(window.table_model.index(7, 0),
                                         window.table.selectionModel().SelectionFlag.Select
                                         | window.table.selectionModel().SelectionFlag.Rows)
    selection = window.navigation.selected_store_rows()
    assert selection == [2, 7]
    exported = tmp_path / "selection.pcapng"
    assert window.files.save_capture(str(exported), selection) == 2
    assert len(tshark_fields(exported, "frame.number")) == 2

    before = workbench.store.generation
    window.files.open_capture(str(path))
    qtbot.waitUntil(lambda: window.generation != before and window.count == count
                    and window.table_model.rowCount() == count, timeout=10000)
    assert [workbench.store.raw(r) for r in range(count)] == saved
    reopened_outbound = workbench.store.column("outbound", 0, count)
    assert list(reopened_outbound) == list(outbound)
    assert "capture.pcapng" in window.windowTitle()


def test_opening_a_corrupt_file_says_what_and_where(qtbot, workbench, tmp_path):
    window = workbench.window
    path = tmp_path / "broken.pcapng"
    path.write_bytes(b"\x0a\x0d\x0d\x0a" + b"\x00" * 10)
    window.files.open_capture(str(path))
    qtbot.waitUntil(lambda: window.error_banner.isVisible(), timeout=5000)
    assert window.errors
    assert "broken.pcapng" in window.error_banner.label.text() or "offset" in window.error_banner.label.text()
    window.files.open_capture(str(tmp_path / "missing.pcapng"))
    assert "no such file" in window.error_banner.label.text()
