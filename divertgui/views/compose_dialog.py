"""Compose a packet from a template or a captured one, edit it, inject it inbound or outbound."""

from __future__ import annotations

from typing import Callable

from PySide6.QtWidgets import (QButtonGroup, QComboBox, QDialog, QDialogButtonBox, QHBoxLayout, QLabel,
                               QPushButton, QRadioButton, QSpinBox, QVBoxLayout)

from divertgui.engine.address import Address
from divertgui.models import compose_templates
from divertgui.views.packet_editor import EditError, PacketEditor

SELECTED = "Selected packet"


class ComposeDialog(QDialog):
    def __init__(self, post: Callable[..., None], selected: tuple[bytes, Address] | None = None, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Compose and inject")
        self.resize(560, 640)
        self.post = post
        self.selected = selected
        self.injected = 0

        self.source = QComboBox(self)
        if selected is not None:
            self.source.addItem(SELECTED)
        self.source.addItems(compose_templates.template_names())
        self.source.currentTextChanged.connect(self.load)
        self.outbound = QRadioButton("Outbound", self)
        self.inbound = QRadioButton("Inbound", self)
        self.direction = QButtonGroup(self)
        self.direction.addButton(self.outbound)
        self.direction.addButton(self.inbound)
        self.outbound.setChecked(True)
        self.if_idx = QSpinBox(self)
        self.if_idx.setRange(0, 1 << 20)
        self.if_idx.setToolTip("Interface index (0: let the stack choose)")
        self.editor = PacketEditor(self)
        self.result = QLabel(self)
        self.inject_button = QPushButton("Inject", self)
        self.inject_button.setDefault(True)
        self.inject_button.clicked.connect(self.inject)
        self.editor.validity_changed.connect(self.inject_button.setEnabled)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.addButton(self.inject_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)

        top = QHBoxLayout()
        top.addWidget(QLabel("Start from:", self))
        top.addWidget(self.source, 1)
        where = QHBoxLayout()
        where.addWidget(QLabel("Inject:", self))
        where.addWidget(self.outbound)
        where.addWidget(self.inbound)
        where.addStretch(1)
        where.addWidget(QLabel("Interface index:", self))
        where.addWidget(self.if_idx)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(where)
        layout.addWidget(self.editor, 1)
        layout.addWidget(self.result)
        layout.addWidget(buttons)
        self.load(self.source.currentText())

    def load(self, name: str) -> None:
        if name == SELECTED and self.selected is not None:
            raw, address = self.selected
            (self.outbound if address.outbound else self.inbound).setChecked(True)
            self.if_idx.setValue(address.if_idx)
        else:
            raw, address = compose_templates.template(name, self.outbound.isChecked())
        self.editor.set_packet(raw, address)

    def inject(self) -> None:
        try:
            data = self.editor.edited()
        except (EditError, ValueError) as exc:
            self.editor.show_error(exc)
            return
        self.post("inject", data=data.hex(), outbound=self.outbound.isChecked(), if_idx=self.if_idx.value())
        self.injected += 1
        direction = "outbound" if self.outbound.isChecked() else "inbound"
        self.result.setText(f"Injected {len(data)} bytes {direction} ({self.injected} so far)")
