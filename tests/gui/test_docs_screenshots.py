"""The user guide's pictures: the real window on the demo source, in the states the guide describes.

Each test takes one or more pictures and checks that each is a real PNG of a
sensible size with something drawn on it. They go to a temporary folder, so a
test run leaves the checkout as it was; `make screenshots` writes them into
docs/images/ instead.
"""

from __future__ import annotations

import os
import pathlib
import struct
import subprocess

import numpy as np
import pytest
from PySide6.QtCore import QRect, Qt
from PySide6.QtGui import QImage, QTextCursor

from divertgui.views import window_settings
from divertgui.views.window_layout import first_window_size
from tests.gui.conftest import start_demo
from tests.gui.test_live_hold_edit import namespace  # noqa: F401 (a fixture)
from tests.gui.test_live_processes import live_capture_of_senders
from tests.integration.test_processes_netns import say

DOCS_IMAGES = pathlib.Path(__file__).resolve().parents[2] / "docs" / "images"
IMAGES: pathlib.Path  # where this run puts its pictures: see images_folder
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The first window's size on a 1920x1080 screen.
WINDOW_SIZE = first_window_size(QRect(0, 0, 1920, 1080)).toTuple()


@pytest.fixture(autouse=True, scope="module")
def images_folder(tmp_path_factory):
    global IMAGES
    IMAGES = DOCS_IMAGES if os.environ.get("DIVERTGUI_SCREENSHOTS") == "docs" else tmp_path_factory.mktemp("images")


def save(widget, name: str, min_size: tuple[int, int], area: QRect | None = None) -> pathlib.Path:
    IMAGES.mkdir(parents=True, exist_ok=True)
    path = IMAGES / name
    picture = widget.grab(area) if area is not None else widget.grab()
    assert picture.save(str(path), "PNG"), f"Qt could not write {path}"
    check_picture(path, min_size)
    return path


def check_picture(path: pathlib.Path, min_size: tuple[int, int]) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG file"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= min_size[0] and height >= min_size[1], f"{path} is only {width}x{height}"
    image = QImage(str(path)).convertToFormat(QImage.Format.Format_RGB32)
    assert not image.isNull() and (image.width(), image.height()) == (width, height)
    pixels = np.frombuffer(image.constBits(), dtype=np.uint32, count=image.width() * image.height())
    colours, counts = np.unique(pixels, return_counts=True)
    # A blank or single-colour grab has a handful of colours and one of them everywhere.
    assert len(colours) >= 16, f"{path} has only {len(colours)} colours: it looks blank"
    assert counts.max() / pixels.size < 0.97, f"{path} is almost all one colour"


def hold_one(qtbot, window, text: str) -> None:
    window.intercept.filter.set_text(text)
    window.intercept.filter.submit()
    qtbot.waitUntil(lambda: window.queue_model.rowCount() > 0, timeout=10000)


def test_main_window_with_traffic_and_charts(qtbot, workbench):
    window = workbench.window
    window.resize(*WINDOW_SIZE)
    window_settings.apply_default_layout(window)
    start_demo(qtbot, workbench, rows=300)
    hold_one(qtbot, window, "tcp.DstPort == 443 and tcp.PayloadLength > 0")
    qtbot.waitUntil(lambda: window.charts.updates >= 8, timeout=10000)
    window.table.auto_scroll = False
    window.navigation.go_to_packet(max(1, window.count - 10))
    tree = window.details.tree
    transport = tree.topLevelItem(min(1, tree.topLevelItemCount() - 1))
    transport.setExpanded(True)
    if transport.childCount() > 1:
        tree.setCurrentItem(transport.child(1))
    window.display_filter.set_text("tcp or udp or icmp or icmpv6")
    qtbot.wait(300)
    save(window, "main-window.png", (1200, 700))
    save(window.charts_dock, "charts.png", (600, 200))
    window.intercept.forward_all()


def test_a_held_packet_in_the_intercept_editor(qtbot, workbench):
    window = workbench.window
    window.resize(*WINDOW_SIZE)
    window.resizeDocks([window.intercept_dock], [560], Qt.Orientation.Horizontal)
    start_demo(qtbot, workbench, rows=20)
    hold_one(qtbot, window, "tcp.DstPort == 80 and tcp.PayloadLength > 0")
    panel = window.intercept
    panel.select(window.queue_model.hold_id(0))
    form = panel.editor.form
    qtbot.waitUntil(lambda: panel.current_id is not None and ("payload", "bytes") in form.edits)
    payload = form.field("payload", "bytes")
    assert payload.text().startswith("GET /")
    payload.setText(payload.text().replace("GET /", "GET /edited/", 1))
    payload.moveCursor(QTextCursor.MoveOperation.Start)
    scroll = form.parentWidget().parentWidget()

    def payload_shown() -> bool:
        # The form lays itself out after the packet is loaded; scroll once it has.
        scroll.ensureWidgetVisible(payload)
        return not payload.visibleRegion().isEmpty()

    qtbot.waitUntil(payload_shown)
    qtbot.wait(200)
    save(window.intercept_dock, "intercept-editor.png", (400, 600))
    window.intercept.filter.set_text("false")
    window.intercept.filter.submit()
    panel.forward()
    panel.forward_all()


def test_the_filter_editor_underlines_an_error(qtbot, workbench):
    window = workbench.window
    window.resize(1000, 700)
    editor = window.display_filter
    editor.set_text("tcp.DstPort == 443 and ip.TTL < 64 or udp.Dstport == 53")
    qtbot.waitUntil(lambda: not editor.is_valid())
    message, position = editor.error
    assert position == len("tcp.DstPort == 443 and ip.TTL < 64 or ")
    editor.edit.setFocus()
    qtbot.wait(200)
    bar = editor.parentWidget().geometry()
    # The error line is drawn over the list under the bar: the picture takes both.
    save(window, "filter-error.png", (800, 40),
         QRect(bar.left(), bar.top(), bar.width(), editor.message.geometry().bottom() + 4 - bar.top()))
    editor.set_text("tcp.DstPort == 443 and ip.TTL < 64 or udp.DstPort == 53")
    qtbot.waitUntil(editor.is_valid)
    save(editor.parentWidget(), "filter-valid.png", (800, 25))


def test_the_compose_dialog(qtbot, workbench):
    window = workbench.window
    dialog = window.make_compose_dialog()
    qtbot.addWidget(dialog)
    dialog.resize(560, 640)
    dialog.show()
    qtbot.waitExposed(dialog)
    save(dialog, "compose.png", (500, 500))


def test_the_rules_panel_with_counters_and_the_delay_chart(qtbot, workbench):
    window = workbench.window
    window.resize(*WINDOW_SIZE)
    window.resizeDocks([window.intercept_dock], [560], Qt.Orientation.Horizontal)
    window.rules_dock.show()
    window.rules_dock.raise_()
    panel = window.rules_panel
    panel.profiles.setCurrentText("preset: mobile-3g")
    qtbot.mouseClick(panel.load_button, Qt.MouseButton.LeftButton)
    assert [panel.model.rule(row)["kind"] for row in range(panel.model.rowCount())] == \
        ["lag", "drop", "bandwidth", "bandwidth"]
    for row in range(panel.model.rowCount()):
        panel.model.set_value(row, "enabled", True)
    panel.select(0)
    qtbot.waitUntil(lambda: [rule["enabled"] for rule in workbench.bridge.session.rules] == [True] * 4,
                    timeout=5000)
    start_demo(qtbot, workbench, rows=100)
    qtbot.waitUntil(lambda: panel.model.counters(0)["delayed"] >= 100, timeout=10000)
    qtbot.waitUntil(lambda: window.stats.seconds >= 3, timeout=10000)
    qtbot.wait(300)
    save(window.rules_dock, "rules.png", (400, 600))
    save(window.charts_dock, "charts-with-rules.png", (600, 200))


@pytest.mark.netns
def test_the_per_process_chart_on_live_traffic(qtbot, namespace, capture_cgroup):  # noqa: F811
    """Three programs sending at different rates in a network namespace."""
    with live_capture_of_senders(qtbot, namespace, capture_cgroup) as (bench, receiver, programs):
        port = receiver.getsockname()[1]
        senders = [program for program, _, _ in programs]
        nc = namespace.popen(["nc", "-u", "127.0.0.1", str(port)], stdin=subprocess.PIPE, text=True)
        window = bench.window
        window.resize(*WINDOW_SIZE)
        window.show()
        window_settings.apply_default_layout(window)
        chart = window.charts.process_chart
        try:
            for step in range(20):
                say(senders[0], "a" * 20)
                for _ in range(1 + step % 4):
                    say(senders[1], "b" * 400)
                if step > 6:
                    say(nc, "c" * 200)
                qtbot.wait(150)
            qtbot.waitUntil(lambda: len(chart.labels) == 4, timeout=10000)
            assert any(label.startswith("nc") for label in chart.labels), chart.labels
            save(window.charts_dock, "charts-processes.png", (600, 200))
        finally:
            nc.stdin.close()
            nc.terminate()     # a UDP nc waits for replies after its input ends
            nc.wait(timeout=10)
