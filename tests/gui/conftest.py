import gc
import os

from pathlib import Path

# The offscreen platform's own screen is 800x600; the tests' window is sized for a desktop screen.
SCREENS = Path(__file__).resolve().parent / "screens"
os.environ.setdefault("QT_QPA_PLATFORM", f"offscreen:configfile={SCREENS / 'desktop-1920x1080.json'}")

import pytest  # noqa: E402
from PySide6.QtCore import QCoreApplication, QSettings  # noqa: E402

# Network namespaces for the tests of the window on live traffic.
from tests.integration.conftest import make_namespace, netns, rule_lock_open_to_the_test_user  # noqa: E402,F401


@pytest.fixture(autouse=True)
def private_settings(qapp, tmp_path, monkeypatch):
    """Each test gets its own QSettings store and config folder, never the user's."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    QCoreApplication.setOrganizationName("divertgui-tests")
    QCoreApplication.setApplicationName("divertgui-tests")
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    QSettings().clear()
    yield
    QSettings().clear()


@pytest.fixture(autouse=True)
def garbage_collected_in_the_gui_thread():
    """A test's Qt objects left in reference cycles are destroyed here, in the GUI thread, and not
    by a collection that a later test's thread runs (divertgui.app.GuiThreadCollector says why)."""
    yield
    gc.collect()


@pytest.fixture
def workbench(qtbot):
    """The real store, Session on its QThread and main window, on the demo source."""
    from divertgui.app import Workbench
    from divertgui.views.capture_options import CaptureOptions
    bench = Workbench(CaptureOptions(source="demo", rate=400.0))
    qtbot.addWidget(bench.window)
    bench.window.resize(1600, 1000)
    bench.window.show()
    yield bench
    assert bench.close(), "the session thread did not stop within 5 s"


def start_demo(qtbot, bench, rows: int = 40):
    bench.window.start_capture()
    qtbot.waitUntil(lambda: bench.window.count >= rows, timeout=10000)


def start_live_capture(qtbot, window, capture_filter: str, intercept_filter: str) -> None:
    """Live capture of `capture_filter`, holding what `intercept_filter` matches, once running."""
    window.capture_filter.set_text(capture_filter)
    window.intercept.filter.set_text(intercept_filter)
    window.intercept.filter.submit()
    window.start_capture()
    qtbot.waitUntil(lambda: window.running, timeout=10000)
    assert window.source_name == "live", window.errors
