"""The first window's size and the share its panels get, from the screen it opens on.

A window restored from the settings keeps the size the user left it at; these
apply to the first start only.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QRect, QSize, Qt, QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QDockWidget, QFrame, QMainWindow, QScrollArea, QWidget

SCREEN_FRACTION = 0.85
# Below this the packet list cannot show its columns beside the side panels.
SMALLEST = QSize(1000, 680)
SIDE_FRACTION, SIDE_RANGE = 0.3, (340, 520)
CHARTS_FRACTION, CHARTS_RANGE = 0.32, (280, 420)


def first_window_size(available: QRect) -> QSize:
    """A sensible fraction of the screen, never smaller than SMALLEST unless the screen is."""
    width = max(int(available.width() * SCREEN_FRACTION), min(SMALLEST.width(), available.width()))
    height = max(int(available.height() * SCREEN_FRACTION), min(SMALLEST.height(), available.height()))
    return QSize(width, height)


def _share(total: int, fraction: float, bounds: tuple[int, int]) -> int:
    low, high = bounds
    return max(low, min(high, int(total * fraction)))


def side_panel_width(window_width: int) -> int:
    return _share(window_width, SIDE_FRACTION, SIDE_RANGE)


def charts_height(window_height: int) -> int:
    return _share(window_height, CHARTS_FRACTION, CHARTS_RANGE)


class _Filling(QWidget):
    """Holds a panel at the scroll area's size, or at the panel's minimum size where that is
    larger. A scroll area sizes a panel with a wrapping label to the panel's preferred
    height instead, and scrolls whenever that is taller than the dock, even when all of
    the panel's minimum would fit."""

    def __init__(self, panel: QWidget):
        super().__init__()
        self.panel = panel
        panel.setParent(self)

    def minimumSizeHint(self) -> QSize:
        return self.panel.minimumSizeHint().expandedTo(self.panel.minimumSize())

    def sizeHint(self) -> QSize:
        return self.panel.sizeHint()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self.panel.resize(self.size())

    def event(self, event) -> bool:
        if event.type() == QEvent.Type.LayoutRequest:
            # The panel's minimum may have changed: the scroll area asks again.
            self.updateGeometry()
        return super().event(event)


def scrolled(panel: QWidget) -> QScrollArea:
    """The panel in a scroll area, so that a dock gives up room on a small screen instead of
    making the window wider or taller than the screen; the panel fills it when there is room."""
    area = QScrollArea()
    area.setObjectName(f"{panel.objectName() or 'panel'}_scroll")
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setWidgetResizable(True)
    area.setWidget(_Filling(panel))
    return area


def dock_of(widget: QWidget) -> QDockWidget | None:
    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parentWidget()
    return parent


def fit_to_screen(window: QMainWindow) -> None:
    """Shrinks and moves the window until its frame lies within its screen's available area."""
    screen = window.screen() or QGuiApplication.primaryScreen()
    if screen is None or window.isMaximized() or window.isFullScreen():
        return
    area = screen.availableGeometry()
    frame = window.frameGeometry()
    extra = frame.size() - window.geometry().size()
    width = min(window.width(), area.width() - extra.width())
    height = min(window.height(), area.height() - extra.height())
    if (width, height) != (window.width(), window.height()):
        window.resize(width, height)
    frame = window.frameGeometry()
    left = max(area.left(), min(frame.left(), area.right() + 1 - frame.width()))
    top = max(area.top(), min(frame.top(), area.bottom() + 1 - frame.height()))
    if (left, top) != (frame.left(), frame.top()):
        window.move(left, top)


def keep_on_screen(window: QMainWindow, docks) -> None:
    """Fits the window to its screen again whenever one of the docks is shown, hidden or moved."""
    timer = QTimer(window)
    timer.setSingleShot(True)
    timer.setInterval(0)
    timer.timeout.connect(lambda: fit_to_screen(window))
    for dock in docks:
        for signal in (dock.visibilityChanged, dock.dockLocationChanged, dock.topLevelChanged):
            signal.connect(timer.start)
