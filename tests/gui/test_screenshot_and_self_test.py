"""A picture of the workbench at work, for a person to look at; and `divertgui --self-test`."""

import os
import pathlib
import subprocess
import sys

import pytest
from PySide6.QtCore import Qt

from divertgui.views import window_settings
from tests.gui.conftest import start_demo

ARTIFACTS = pathlib.Path(__file__).resolve().parents[2] / "test-artifacts"


def test_screenshot_of_the_main_window_with_traffic_and_charts(qtbot, workbench):
    window = workbench.window
    window.resize(1680, 1050)
    start_demo(qtbot, workbench, rows=200)
    panel = window.intercept
    panel.filter.set_text("tcp.DstPort == 443 and tcp.PayloadLength > 0")
    panel.filter.submit()
    qtbot.waitUntil(lambda: window.queue_model.rowCount() > 0, timeout=10000)
    qtbot.wait(2500)
    window.navigation.go_to_packet(max(1, window.count - 12))
    window.table.auto_scroll = False
    tree = window.details.tree
    transport = tree.topLevelItem(min(1, tree.topLevelItemCount() - 1))
    transport.setExpanded(True)
    if transport.childCount() > 1:
        tree.setCurrentItem(transport.child(1))
    window.display_filter.set_text("tcp or udp or icmp or icmpv6")
    qtbot.wait(300)
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "main-window.png"
    assert window.grab().save(str(path))
    assert path.stat().st_size > 50_000
    print(f"\nscreenshot: {path}")
    panel.forward_all()


@pytest.mark.parametrize("last_capture_filter", [None, "udp.DstPort == 1"], ids=["fresh", "leftover-filter"])
def test_self_test_command_passes_and_says_so(tmp_path, last_capture_filter):
    if last_capture_filter is not None:
        # A filter left by an earlier run that the demo never matches: the self-test does not read it.
        (tmp_path / "divertgui").mkdir()
        (tmp_path / "divertgui" / "divertgui.conf").write_text(f'[filters]\ncapture\\last="{last_capture_filter}"\n')
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ARTIFACTS.parent), env.get("PYTHONPATH")]))
    env["XDG_CONFIG_HOME"] = str(tmp_path)
    result = subprocess.run([sys.executable, "-c", "import sys; from divertgui.app import main; sys.exit(main(['--self-test']))"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("self-test passed:"), result.stdout
    assert "modified" in lines[0] and "checksums valid" in lines[0]
    settings = tmp_path / "divertgui" / "divertgui.conf"
    if last_capture_filter is None:
        assert not settings.exists(), "the self-test wrote the user's settings"
    else:
        assert last_capture_filter in settings.read_text(), "the self-test changed the user's settings"


def test_wireshark_shortcuts(qtbot, workbench):
    window = workbench.window
    shortcuts = {action.shortcut().toString() for action in window.actions()}
    shortcuts |= {window.start_action.shortcut().toString()}
    assert {"Ctrl+E", "Ctrl+K", "Ctrl+/", "Ctrl+G", "Ctrl+O", "Ctrl+S", "Ctrl+Up", "Ctrl+Down", "Ctrl+F"} <= shortcuts
    qtbot.keyClick(window, Qt.Key.Key_Slash, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: window.display_filter.edit.hasFocus())
    qtbot.keyClick(window.table, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: window.navigation.find_bar.isVisible() and window.navigation.find_filter.edit.hasFocus())


def test_capture_options_dialog_sets_the_demo_rate(qtbot, workbench):
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication
    from divertgui.views.capture_options import CaptureOptionsDialog
    window = workbench.window

    def choose():
        dialog = QApplication.activeModalWidget()
        assert isinstance(dialog, CaptureOptionsDialog)
        dialog.rate.setValue(1234)
        dialog.accept()

    QTimer.singleShot(0, choose)
    qtbot.keyClick(window, Qt.Key.Key_K, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: window.options.rate == 1234)
    assert window.options.source == "demo"


def test_settings_keep_window_state_and_recent_filters(qtbot, workbench):
    from divertgui.views.filter_editor import FilterEditor
    window = workbench.window
    window.capture_filter.set_text("tcp.DstPort == 8080")
    window.mode.setCurrentText("sniff")
    window.display_filter.set_text("udp")
    window.display_filter.submit()
    window_settings.save(window)
    again = type(window)(workbench.store, lambda *a, **k: None)
    qtbot.addWidget(again)
    assert again.capture_filter.text() == "tcp.DstPort == 8080"
    assert again.mode.currentText() == "sniff"
    assert FilterEditor("display").history() == ["udp"]


def test_bad_command_line_says_what_and_where(capsys):
    from divertgui.app import main
    assert main(["--filter", "tcp and udp.Foo"]) == 2
    error = capsys.readouterr().err
    assert "bad token" in error
    assert error.splitlines()[-1] == "  " + " " * len("tcp and ") + "^"
    assert main(["--replay", "/nonexistent/capture.pcapng"]) == 2
    assert "no such file" in capsys.readouterr().err
