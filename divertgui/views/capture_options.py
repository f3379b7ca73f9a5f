"""Where packets come from: the demo source, live capture, or a file replayed."""

from __future__ import annotations

import dataclasses

from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLineEdit, QPushButton, QSpinBox, QWidget)

MAX_WORKERS = 256              # the service refuses more than its cores
SOURCES = {"demo": "Demo traffic (no privileges needed)", "live": "Live capture (netfilter, needs root or the installed capabilities)",
           "replay": "Replay a capture file"}


@dataclasses.dataclass
class CaptureOptions:
    source: str = "demo"
    rate: float = 200.0          # demo packets per second
    path: str = ""               # replay file
    speed: float = 1.0           # replay speed; 0 = as fast as possible
    workers: int | str = 1       # worker processes of a live divert capture, or "auto" (one per core)
    cgroup: str = ""             # live: the cgroup v2 whose processes' sockets the capture names; "": every process


class CaptureOptionsDialog(QDialog):
    def __init__(self, options: CaptureOptions, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Capture options")
        self.source = QComboBox(self)
        for key, label in SOURCES.items():
            self.source.addItem(label, key)
        self.source.setCurrentIndex(list(SOURCES).index(options.source))
        self.rate = QDoubleSpinBox(self)
        self.rate.setRange(1, 1_000_000)
        self.rate.setDecimals(0)
        self.rate.setSuffix(" packets/s")
        self.rate.setValue(options.rate)
        self.path = QLineEdit(options.path, self)
        browse = QPushButton("Browse…", self)
        browse.clicked.connect(self._browse)
        path_row = QWidget(self)
        row = QHBoxLayout(path_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.path, 1)
        row.addWidget(browse)
        self.speed = QDoubleSpinBox(self)
        self.speed.setRange(0, 1000)
        self.speed.setSpecialValueText("as fast as possible")
        self.speed.setSuffix(" × recorded speed")
        self.speed.setValue(options.speed)
        self.workers = QSpinBox(self)
        self.workers.setRange(0, MAX_WORKERS)
        self.workers.setSpecialValueText("auto (one per core)")
        self.workers.setValue(0 if options.workers == "auto" else int(options.workers))
        self.workers.setToolTip("Live captures in divert mode: packets spread over this many processes of the "
                                "capture service, each connection's packets in one of them")
        self.cgroup = QLineEdit(options.cgroup, self)
        self.cgroup.setPlaceholderText("every process")
        self.cgroup.setToolTip("Live captures: the kernel records the creating process of the sockets made in "
                               "this cgroup v2 alone, a path under the cgroup mount such as "
                               "system.slice/nginx.service; other packets get their process from /proc")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow("Source", self.source)
        form.addRow("Demo rate", self.rate)
        form.addRow("Replay file", path_row)
        form.addRow("Replay speed", self.speed)
        form.addRow("Workers", self.workers)
        form.addRow("Socket creators' cgroup", self.cgroup)
        form.addRow(buttons)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Replay capture", self.path.text(),
                                              "Captures (*.pcapng *.pcap *.cap);;All files (*)")
        if path:
            self.path.setText(path)

    def options(self) -> CaptureOptions:
        return CaptureOptions(source=self.source.currentData(), rate=self.rate.value(),
                              path=self.path.text(), speed=self.speed.value(),
                              workers=self.workers.value() or "auto", cgroup=self.cgroup.text().strip())
