"""The status bar's permanent fields: the capture's state, packets, bytes and
rate, and what was held, dropped, expired and lost."""

from __future__ import annotations

import os

from PySide6.QtWidgets import QLabel

from divertgui.engine.loss import describe, losses

FIELDS = ("state", "packets", "displayed", "bytes", "rate", "held", "dropped", "expired", "lost")


def human_bytes(value: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


class StatusLine:
    def __init__(self, window):
        self.window = window
        self.labels: dict[str, QLabel] = {}
        for key in FIELDS:
            label = QLabel(window)
            label.setObjectName(f"status_{key}")
            label.setContentsMargins(6, 0, 6, 0)
            self.labels[key] = label
            window.statusBar().addPermanentWidget(label)

    def update(self) -> None:
        window, labels = self.window, self.labels
        state = "paused" if window.paused else ("capturing" if window.running else "stopped")
        if window.running:
            mode = window.mode_running or window.mode.currentText()
            labels["state"].setText(f"● {state} ({window.source_name}, {mode} mode)")
        elif window.files.opened is not None:
            labels["state"].setText(f"○ file {os.path.basename(window.files.opened)}")
        else:
            labels["state"].setText(f"○ {state}")
        labels["packets"].setText(f"Packets {window.count:,}")
        # As Wireshark says it, while a display or process filter chooses the rows.
        labels["displayed"].setVisible(window.table_model.filtered())
        labels["displayed"].setText(f"Displayed: {window.table_model.rowCount():,} of {window.count:,}")
        labels["bytes"].setText(f"Bytes {human_bytes(window.stats.total_bytes)}")
        # A rate is of packets arriving now: none while stopped, paused (no row is added) or on a file.
        live = window.running and not window.paused
        labels["rate"].setVisible(live)
        if live:
            packets_per_s, bytes_per_s = window.stats.rates()
            labels["rate"].setText(f"{packets_per_s:,.0f} pkt/s · {human_bytes(bytes_per_s)}/s")
        stats = window.session_stats
        labels["held"].setText(f"Held {window.queue_model.rowCount()}")
        for key in ("dropped", "expired"):
            labels[key].setText(f"{key.capitalize()} {int(stats.get(key, 0)):,}")
        lost = losses(stats)
        labels["lost"].setText(f"Lost {sum(lost.values()):,}")
        labels["lost"].setStyleSheet("color: white; background: #c62828; font-weight: bold;" if lost else "")
        labels["lost"].setToolTip(describe(lost) if lost else "No packet lost")
