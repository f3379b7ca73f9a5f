"""Opens the window on the screen the Qt platform gives (a fake 1366x768 one in the tests),
sets its panels up as the scenario named on the command line says, and prints as JSON the
window's frame and the screen's available area.

Usage: python -m tests.gui.screen_fit_scenario SCENARIO SETTINGS_DIR
"""

from __future__ import annotations

import json
import sys

from PySide6.QtCore import QCoreApplication, QSettings, Qt
from PySide6.QtWidgets import QApplication

SCENARIOS = ("first_start", "events", "processes", "charts_again", "events_beside_charts_restored")


def settle(app: QApplication) -> None:
    for _ in range(10):
        app.processEvents()


def rect(r) -> list[int]:
    return [r.x(), r.y(), r.width(), r.height()]


def main(scenario: str, settings_dir: str) -> None:
    app = QApplication(sys.argv[:1])
    QCoreApplication.setOrganizationName("divertgui-tests")
    QCoreApplication.setApplicationName("divertgui-tests")
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, settings_dir)
    QSettings().clear()
    from divertgui.engine.store import CaptureStore
    from divertgui.views import window_settings
    from divertgui.views.main_window import MainWindow

    def open_window() -> MainWindow:
        window = MainWindow(CaptureStore(), lambda *a, **k: None)
        window.show()
        settle(app)
        return window

    window = open_window()
    if scenario == "events":
        window.events_dock.show()
    elif scenario == "processes":
        window.processes_dock.show()
    elif scenario == "charts_again":
        window.events_dock.show()
        settle(app)
        window.charts_dock.hide()
        settle(app)
        window.charts_dock.show()
    elif scenario == "events_beside_charts_restored":
        # A layout saved on a larger screen, with the events beside the charts.
        window.events_dock.show()
        window.splitDockWidget(window.charts_dock, window.events_dock, Qt.Orientation.Horizontal)
        window.setGeometry(0, 0, 1851, 1000)
        settle(app)
        window_settings.save(window)
        window.close()
        window.deleteLater()
        settle(app)
        window = open_window()
        assert window.events_dock.isVisible(), "the restored layout lost the events panel"
    settle(app)
    screen = window.screen().availableGeometry()
    print(json.dumps({"frame": rect(window.frameGeometry()), "available": rect(screen),
                      "events_visible": window.events_dock.isVisible()}))
    QSettings().clear()


if __name__ == "__main__":
    main(*sys.argv[1:3])
