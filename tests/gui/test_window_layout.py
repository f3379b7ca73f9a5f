"""The first window fits the screen and shows every column; charts are tall enough to read;
the selected packet stays in view while packets arrive; a filter error never moves the list."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QRect, QSize, Qt
from PySide6.QtGui import QGuiApplication

from divertgui.models.packet_table import INFO, VERDICT
from divertgui.views.charts_panel import PLOT_MIN_HEIGHT
from divertgui.views import window_settings
from divertgui.views.window_layout import first_window_size
from tests.gui.conftest import SCREENS, start_demo
from tests.gui.screen_fit_scenario import SCENARIOS

# The size the window had on a 1366x768 laptop screen before it was fitted to the screen.
OLD_DEFAULT = (1131, 666)


def column_in_view(table, column: int) -> bool:
    header = table.horizontalHeader()
    left = header.sectionViewportPosition(column)
    return left >= 0 and left + header.sectionSize(column) <= table.viewport().width() and \
        header.sectionSize(column) >= 60


def test_the_first_window_is_a_fraction_of_the_screen():
    assert first_window_size(QRect(0, 0, 1920, 1080)) == QSize(1632, 918)
    assert first_window_size(QRect(0, 0, 2560, 1440)) == QSize(2176, 1224)
    # A small screen still gets a window that shows the columns, as large as the screen allows.
    assert first_window_size(QRect(0, 0, 1024, 700)) == QSize(1000, 680)
    assert first_window_size(QRect(0, 0, 800, 600)) == QSize(800, 600)


def test_a_first_start_sizes_the_window_to_its_screen(qtbot):
    from divertgui.engine.store import CaptureStore
    from divertgui.views.main_window import MainWindow
    window = MainWindow(CaptureStore(), lambda *a, **k: None)
    qtbot.addWidget(window)
    area = (window.screen() or QGuiApplication.primaryScreen()).availableGeometry()
    assert window.size() == first_window_size(area)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_window_fits_a_1366x768_screen_whatever_panels_are_shown(tmp_path, scenario):
    # The offscreen platform's screen is set when the application starts, so each
    # scenario runs in its own process on a fake laptop screen.
    env = dict(os.environ, QT_QPA_PLATFORM=f"offscreen:configfile={SCREENS / 'laptop-1366x768.json'}",
               XDG_CONFIG_HOME=str(tmp_path / "config"))
    done = subprocess.run([sys.executable, "-m", "tests.gui.screen_fit_scenario", scenario, str(tmp_path / "settings")],
                          cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout.strip().splitlines()[-1])
    assert shown["available"] == [0, 0, 1366, 768]
    frame, available = QRect(*shown["frame"]), QRect(*shown["available"])
    assert available.contains(frame), f"{scenario}: the window {shown['frame']} leaves the screen {shown['available']}"
    assert shown["events_visible"] == (scenario in ("events", "charts_again", "events_beside_charts_restored"))


def test_info_and_verdict_are_in_view_and_charts_readable_at_the_old_default_size(qtbot, workbench):
    window = workbench.window
    window.resize(*OLD_DEFAULT)
    window_settings.apply_default_layout(window)
    start_demo(qtbot, workbench, rows=30)
    qtbot.wait(100)
    assert column_in_view(window.table, VERDICT)
    assert column_in_view(window.table, INFO)
    assert window.table.horizontalScrollBar().maximum() == 0
    for plot in (window.charts.packets_plot, window.charts.direction_plot):
        assert plot.height() >= PLOT_MIN_HEIGHT
        axis = plot.getAxis("left")
        assert axis.labelUnits and axis.style["showValues"]


def test_the_selected_packet_stays_in_view_until_the_user_goes_back_to_the_end(qtbot, workbench):
    window = workbench.window
    start_demo(qtbot, workbench, rows=200)
    table = window.table
    qtbot.waitUntil(lambda: table.verticalScrollBar().maximum() > 0, timeout=10000)
    visible_rows = table.viewport().height() // table.rowHeight(0)
    row = window.table_model.rowCount() - visible_rows // 2
    table.selectRow(row)
    shown = window.count
    qtbot.waitUntil(lambda: window.count > shown + 3 * visible_rows, timeout=10000)
    rect = table.visualRect(window.table_model.index(row, 0))
    assert table.viewport().rect().contains(rect), "the selected row scrolled out of view"
    bar = table.verticalScrollBar()
    bar.setValue(bar.maximum())
    shown = window.count
    qtbot.waitUntil(lambda: window.count > shown + 3 * visible_rows, timeout=10000)
    qtbot.waitUntil(lambda: bar.value() >= bar.maximum() - 1, timeout=3000)
    assert not table.viewport().rect().contains(table.visualRect(window.table_model.index(row, 0)))


def test_a_filter_error_does_not_move_the_packet_list_and_enter_says_why(qtbot, workbench):
    window = workbench.window
    qtbot.wait(50)
    top = window.table.mapTo(window, window.table.rect().topLeft()).y()
    window.display_filter.set_text("TCP.dstport == 80")
    qtbot.wait(50)
    assert window.display_filter.message.isVisible()
    assert "did you mean `tcp.DstPort`?" in window.display_filter.message.text()
    assert window.table.mapTo(window, window.table.rect().topLeft()).y() == top
    qtbot.keyClick(window.display_filter.edit, Qt.Key.Key_Return)
    assert window.statusBar().currentMessage().startswith("Display filter not applied: position 0:")
