"""File > Open, Save, Export Selected and Open Recent for the main window.

Opening a file asks the session to load it (recorded times, verdicts and
original bytes come back with it); the Mode box is left as the user set it,
for the next live capture.
"""

from __future__ import annotations

import datetime
import os

from PySide6.QtCore import QSettings
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QFileDialog

RECENT_FILES = 10
CAPTURE_FILES = "Captures (*.pcapng *.pcap *.cap);;All files (*)"


def proposed_file_name(first_wall_ns: int | None, now: datetime.datetime | None = None) -> str:
    """A name for a new capture file, as Wireshark proposes one: the capture's start date and time."""
    start = (datetime.datetime.fromtimestamp(first_wall_ns / 1e9) if first_wall_ns
             else now or datetime.datetime.now())
    return f"divertgui_{start:%Y-%m-%d_%H-%M-%S}.pcapng"


class FileActions:
    def __init__(self, window):
        self.window = window
        self.opened: str | None = None      # the file the store holds, None for a capture

    # opening ----------------------------------------------------------------------
    def open_capture(self, path: str) -> None:
        """Replaces the capture with a pcap/pcapng file's packets, as they were saved."""
        window = self.window
        if not os.path.isfile(path):
            window.error_banner.show_message(f"no such file: {path}", "Open")
            return
        self.remember(path)
        self.opened = os.path.abspath(path)
        window.post("open", path=self.opened)
        window.setWindowTitle(f"{os.path.basename(path)} — divertgui")

    def before_capture(self) -> None:
        """A capture started after a file was opened starts empty, as in Wireshark."""
        if self.opened is not None:
            self.opened = None
            self.window.post("clear")
            self.window.setWindowTitle(self.window.TITLE)

    def open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.window, "Open capture", self.last_directory(), CAPTURE_FILES)
        if path:
            self.open_capture(path)

    def fill_menu(self, menu, add_action) -> None:
        add_action(menu, "&Open…", self.open_dialog, QKeySequence.StandardKey.Open)
        recent_menu = menu.addMenu("Open &Recent")
        recent_menu.aboutToShow.connect(lambda: self.fill_recent(recent_menu))
        add_action(menu, "&Save…", self.save_dialog, QKeySequence.StandardKey.Save)
        add_action(menu, "&Export Selected Packets…", self.export_dialog, "Ctrl+Shift+X")

    # saving -------------------------------------------------------------------------
    def save_capture(self, path: str, rows=None) -> int:
        """Writes the stored packets with the Events view's events (or `rows` alone) to a pcapng
        file; returns how many packets."""
        from divertgui.engine.saved_capture import save_rows
        window = self.window
        count = window.count
        events = window.events_view.model.records if rows is None else []
        rows = range(count) if rows is None else [r for r in rows if r < count]
        try:
            written = save_rows(window.store, path, rows, events)
        except OSError as exc:
            window.error_banner.show_message(f"cannot write {path}: {exc.strerror or exc}", "Save")
            return 0
        self.remember(path)
        saved_events = f" and {len(events):,} events" if events else ""
        window.statusBar().showMessage(f"Saved {written:,} packets{saved_events} to {path}", 5000)
        return written

    def proposed_path(self) -> str:
        """Where the Save dialog starts: the opened file, else a dated name in the last folder."""
        if self.opened is not None:
            return self.opened
        store = self.window.store
        first = store.value("wall_ns", 0) if self.window.count else None
        return os.path.join(self.last_directory(), proposed_file_name(first))

    def save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self.window, "Save capture", self.proposed_path(), "pcapng (*.pcapng)")
        if path:
            self.save_capture(path if path.endswith((".pcapng", ".pcap")) else path + ".pcapng")

    def export_dialog(self) -> None:
        window = self.window
        rows = window.navigation.selected_store_rows()
        if not rows:
            window.statusBar().showMessage("Select the packets to export first", 5000)
            return
        proposed = os.path.join(self.last_directory(),
                                proposed_file_name(window.store.value("wall_ns", rows[0])))
        path, _ = QFileDialog.getSaveFileName(window, f"Export {len(rows)} packets", proposed, "pcapng (*.pcapng)")
        if path:
            self.save_capture(path if path.endswith(".pcapng") else path + ".pcapng", rows)

    # recent files ---------------------------------------------------------------------
    def last_directory(self) -> str:
        recent = self.recent_files()
        return os.path.dirname(recent[0]) if recent else os.getcwd()

    @staticmethod
    def recent_files() -> list[str]:
        value = QSettings().value("files/recent", [])
        return [value] if isinstance(value, str) else list(value or [])

    def remember(self, path: str) -> None:
        path = os.path.abspath(path)
        recent = [path] + [p for p in self.recent_files() if p != path]
        QSettings().setValue("files/recent", recent[:RECENT_FILES])

    def fill_recent(self, menu) -> None:
        menu.clear()
        for path in self.recent_files():
            menu.addAction(path, lambda p=path: self.open_capture(p))
        if not self.recent_files():
            menu.addAction("(none)").setEnabled(False)
