"""Render resources/icons/divertgui.svg to the PNG sizes desktops ask for,
and to divertgui.ico for the Windows executables and installer.

Run after editing the SVG: python3 packaging/render_icons.py
"""

from __future__ import annotations

import os
import pathlib
import sys

SIZES = (16, 24, 32, 48, 64, 128, 256)
ICONS = pathlib.Path(__file__).resolve().parent.parent / "resources" / "icons"


def render(svg: pathlib.Path = ICONS / "divertgui.svg", out: pathlib.Path = ICONS) -> list[pathlib.Path]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"{svg}: not a valid SVG")
    written = []
    for size in SIZES:
        image = QImage(size, size, QImage.Format.Format_ARGB32)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        renderer.render(painter)
        painter.end()
        path = out / f"divertgui-{size}.png"
        if not image.save(str(path)):
            raise SystemExit(f"{path}: could not be written")
        written.append(path)
        if size == max(SIZES):
            ico = out / "divertgui.ico"
            if not image.save(str(ico), "ICO"):
                raise SystemExit(f"{ico}: could not be written")
            written.append(ico)
    del app
    return written


if __name__ == "__main__":
    for path in render():
        print(path)
