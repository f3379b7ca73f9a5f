"""The first window's size and the share its panels get, from the screen it opens on.

A window restored from the settings keeps the size the user left it at; these
apply to the first start only.
"""

from __future__ import annotations

from PySide6.QtCore import QRect, QSize

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
