"""What the window keeps across starts (QSettings): its geometry, the panels'
places, the packet list's split, and the capture filter, mode and priority."""

from __future__ import annotations

from PySide6.QtCore import QByteArray, QSettings, Qt
from PySide6.QtGui import QGuiApplication

from divertgui.views.window_layout import charts_height, first_window_size, fit_to_screen, side_panel_width


def apply_default_layout(window) -> None:
    """The panels' share of the window at its current size, as on a first start."""
    window.resizeDocks([window.intercept_dock], [side_panel_width(window.width())], Qt.Orientation.Horizontal)
    window.resizeDocks([window.charts_dock], [charts_height(window.height())], Qt.Orientation.Vertical)


def restore(window) -> None:
    settings = QSettings()
    geometry = settings.value("window/geometry")
    if isinstance(geometry, QByteArray):
        window.restoreGeometry(geometry)
    else:
        area = (window.screen() or QGuiApplication.primaryScreen()).availableGeometry()
        window.resize(first_window_size(area))
        window.move(area.center() - window.rect().center())
    state = settings.value("window/state")
    if isinstance(state, QByteArray):
        window.restoreState(state)
    else:
        apply_default_layout(window)
    # Settings saved on a larger screen, or with more panels beside each other, must not
    # leave the window wider or taller than this screen.
    fit_to_screen(window)
    splitter = settings.value("window/splitter")
    if isinstance(splitter, QByteArray):
        window.splitter.restoreState(splitter)
    window.capture_filter.set_text(str(settings.value("filters/capture/last", "") or ""))
    window.mode.setCurrentText(str(settings.value("capture/mode", "divert")))
    window.priority.setValue(int(settings.value("capture/priority", 0)))


def save(window) -> None:
    settings = QSettings()
    settings.setValue("window/geometry", window.saveGeometry())
    settings.setValue("window/state", window.saveState())
    settings.setValue("window/splitter", window.splitter.saveState())
    settings.setValue("filters/capture/last", window.capture_filter.text())
    settings.setValue("capture/mode", window.mode.currentText())
    settings.setValue("capture/priority", window.priority.value())
