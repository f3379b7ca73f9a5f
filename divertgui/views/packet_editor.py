"""Edit a packet as a form of its decoded fields or as raw hex.

The form is generated from the engine's writable header views (Packet.ip,
.ipv6, .icmp, .icmpv6, .tcp, .udp and .payload) and labelled by their field
descriptors: each field a line (a checkbox for a one-bit flag), setting it
goes through the view, so the editor knows no header layout itself.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QFormLayout, QGroupBox, QLabel, QLineEdit,
                               QScrollArea, QTabWidget, QVBoxLayout, QWidget)

from divertgui.engine.address import Address
from divertgui.engine.packet import Packet, field_label
from divertgui.views.flow_layout import FlowLayout
from divertgui.views.hex_view import HexEditor, HexPane
from divertgui.views.payload_edit import PayloadEdit, payload_bytes, payload_hint, payload_text
from divertgui.views.wrapped_label import WrappedLabel

HEADERS = ("ip", "ipv6", "icmp", "icmpv6", "tcp", "udp")
HEADER_TITLES = {"ip": "IPv4", "ipv6": "IPv6", "icmp": "ICMP", "icmpv6": "ICMPv6", "tcp": "TCP", "udp": "UDP"}


class EditError(ValueError):
    """What in the editor is wrong, and where (a field name or a hex position)."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


def _field_text(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


# A field made only of one-bit flags is edited through their checkboxes, which take its place.
BIT_SET_FIELDS = {"flags"}


class FieldForm(QWidget):
    """Decoded fields grouped by header, labelled as Wireshark labels them: a line per
    field, and one-bit flags as checkboxes gathered in a "Flags" row."""

    def __init__(self, empty_text: str, parent=None):
        super().__init__(parent)
        self.empty_text = empty_text            # shown while there is no packet at all
        self.layout_ = QVBoxLayout(self)
        self.layout_.setContentsMargins(2, 2, 2, 2)
        self.edits: dict[tuple[str, str], QLineEdit | PayloadEdit] = {}
        self.checks: dict[tuple[str, str], QCheckBox] = {}
        self.values: dict[tuple[str, str], str] = {}
        self.groups: list[QGroupBox] = []
        self.payload_hint: QLabel | None = None
        self.notice: QLabel | None = None       # why there are no fields, when there are none

    def load(self, packet: Packet) -> None:
        for group in self.groups:
            group.deleteLater()
        self.groups, self.edits, self.checks, self.values = [], {}, {}, {}
        self.payload_hint = self.notice = None
        while self.layout_.count():
            item = self.layout_.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        for header in HEADERS:
            view = getattr(packet, header)
            if view is None:
                continue
            group = QGroupBox(HEADER_TITLES[header], self)
            group.setObjectName(f"{header}_fields")
            form = self._form(group)
            form.setVerticalSpacing(2)
            self._add_header(form, header, view)
            self.layout_.addWidget(group)
            self.groups.append(group)
        payload = packet.payload
        if payload is not None:
            group = QGroupBox("Payload", self)
            group.setObjectName("payload_fields")
            form = self._form(group)
            form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapAllRows)
            edit = self._add(form, "payload", "bytes", "Data", payload_text(payload), PayloadEdit)
            hint = self.payload_hint = QLabel(payload_hint(edit.text()), group)
            hint.setObjectName("payload_hint")
            edit.textChanged.connect(lambda: hint.setText(payload_hint(edit.text())))
            form.addRow(hint)
            self.layout_.addWidget(group)
            self.groups.append(group)
        if not self.groups:
            self.notice = QLabel(self.empty_text if not packet.raw else "Not an IPv4/IPv6 packet: edit the raw bytes.",
                                 self)
            self.layout_.addWidget(self.notice)
        self.layout_.addStretch(1)

    @staticmethod
    def _form(group: QGroupBox) -> QFormLayout:
        form = QFormLayout(group)
        form.setContentsMargins(6, 4, 6, 4)
        # A narrow panel puts a label above its field rather than cutting either.
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        return form

    def _add_header(self, form: QFormLayout, header: str, view) -> None:
        values = view.fields()
        flags: FlowLayout | None = None
        for name, descriptor in view.field_descriptors().items():
            value = values[name]
            if isinstance(value, bool):
                if flags is None:
                    flags = self._add_flags_row(form, header)
                self._add_check(flags, header, name, field_label(descriptor, name), value)
            elif name not in BIT_SET_FIELDS:
                self._add(form, header, name, field_label(descriptor, name), _field_text(value))

    def _add_flags_row(self, form: QFormLayout, header: str) -> FlowLayout:
        box = QWidget()
        box.setObjectName(f"{header}.flags")
        # The flags wrap to the panel's width: every name stays whole.
        flow = FlowLayout(box)
        label = QLabel("Flags")
        label.setToolTip("flags")
        form.addRow(label, box)
        return flow

    def _add_check(self, flow: FlowLayout, header: str, name: str, label: str, value: bool) -> QCheckBox:
        check = QCheckBox(label)
        check.setObjectName(f"{header}.{name}")
        check.setToolTip(name)
        check.setChecked(value)
        flow.addWidget(check)
        self.checks[(header, name)] = check
        self.values[(header, name)] = _field_text(value)
        return check

    def _add(self, form: QFormLayout, header: str, name: str, label: str, text: str,
             kind=QLineEdit) -> QLineEdit | PayloadEdit:
        edit = kind(text)
        edit.setMinimumWidth(60)
        edit.setObjectName(f"{header}.{name}")
        edit.setToolTip(name)
        caption = QLabel(label)
        caption.setToolTip(name)
        caption.setBuddy(edit)
        form.addRow(caption, edit)
        self.edits[(header, name)] = edit
        self.values[(header, name)] = text
        return edit

    def field(self, header: str, name: str) -> QLineEdit | PayloadEdit | QCheckBox:
        """The line edit of a field, or the checkbox of a one-bit flag."""
        key = (header, name)
        return self.checks[key] if key in self.checks else self.edits[key]

    def label_of(self, header: str, name: str) -> str:
        """The text the form shows for a field."""
        widget = self.field(header, name)
        if isinstance(widget, QCheckBox):
            return widget.text()
        form = widget.parentWidget().layout()
        caption = form.labelForField(widget)
        return caption.text() if caption is not None else ""

    def _changed_fields(self):
        """(header, name, text) of every header field whose widget differs from what was loaded."""
        for (header, name), check in self.checks.items():
            text = _field_text(check.isChecked())
            if text != self.values[(header, name)]:
                yield header, name, text
        for (header, name), edit in self.edits.items():
            if header == "payload":
                continue
            text = edit.text().strip()
            if text != self.values[(header, name)]:
                yield header, name, text

    def apply(self, packet: Packet) -> None:
        """Writes the changed fields into `packet` (headers first, then the payload)."""
        for header, name, text in self._changed_fields():
            view = getattr(packet, header)
            if view is None:
                raise EditError(f"{header}.{name}", f"the packet no longer has a {HEADER_TITLES[header]} header")
            value = text if name.endswith("_addr") else self._integer(f"{header}.{name}", text)
            try:
                setattr(view, name, value)
            except (ValueError, TypeError) as exc:
                raise EditError(f"{header}.{name}", str(exc)) from None
        edit = self.edits.get(("payload", "bytes"))
        if edit is not None and edit.text() != self.values[("payload", "bytes")]:
            try:
                packet.payload = payload_bytes(edit.text())
            except ValueError as exc:
                raise EditError("payload", str(exc)) from None

    @staticmethod
    def _integer(where: str, text: str) -> int:
        try:
            return int(text, 0)
        except ValueError:
            raise EditError(where, f"{text!r} is not a number (decimal or 0x hex)") from None


class PacketEditor(QWidget):
    """Fields and Hex tabs over one packet; `edited()` gives the bytes to send.
    `validity_changed(valid)` fires when the hex becomes valid or invalid as it is typed."""

    validity_changed = Signal(bool)

    def __init__(self, parent=None, empty_text: str = "No packet"):
        super().__init__(parent)
        self.address = Address()
        self.raw = b""
        self.working = b""
        self.form = FieldForm(empty_text)
        scroll = QScrollArea(self)
        scroll.setWidget(self.form)
        scroll.setWidgetResizable(True)
        # The form fits the panel's width (flags wrap, labels go above fields), never scrolls sideways.
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll = scroll
        self.hex = HexEditor(self)
        self.hex.setObjectName("raw_hex")
        self.hex.validity_changed.connect(self.validity_changed)
        self.hex_pane = HexPane(self.hex, self)
        self.tabs = QTabWidget(self)
        self.tabs.addTab(scroll, "Fields")
        self.tabs.addTab(self.hex_pane, "Hex")
        self.tabs.currentChanged.connect(self._sync)
        self.fix = QCheckBox("Fix lengths and checksums", self)
        self.fix.setChecked(True)
        self.fix.setToolTip("Recompute IP/UDP lengths and every checksum before sending")
        self.error = WrappedLabel("", self)
        self.error.setStyleSheet("color: #a00000;")
        self.error.hide()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.fix)
        layout.addWidget(self.error)
        self._shown_tab = 0
        self.clear()

    def set_packet(self, raw: bytes, address: Address) -> None:
        """Starts editing `raw`; it stays as `raw`, the unedited bytes."""
        self.raw = bytes(raw)
        self.address = address
        self._load(self.raw)

    def _load(self, raw: bytes) -> None:
        self.working = raw
        self.error.hide()
        self.form.load(Packet(raw, self.address))
        self.hex.set_data(raw)

    def clear(self) -> None:
        self.set_packet(b"", Address())

    def _current_bytes(self) -> bytes:
        """The bytes as the tab last shown describes them, before any fixing."""
        if self._shown_tab == 1:
            try:
                return self.hex.data()
            except ValueError as exc:
                raise EditError("hex", str(exc)) from None
        packet = Packet(bytearray(self.working), self.address.copy())
        self.form.apply(packet)
        return packet.raw

    def _sync(self, index: int) -> None:
        try:
            raw = self._current_bytes()
        except EditError as exc:
            self.show_error(exc)
            self.tabs.blockSignals(True)
            self.tabs.setCurrentIndex(self._shown_tab)
            self.tabs.blockSignals(False)
            return
        self._shown_tab = index
        self._load(raw)

    def is_valid(self) -> bool:
        """False while the hex tab holds text that is not hex."""
        return self.hex.problem is None

    def show_error(self, error: Exception) -> None:
        self.error.setText(str(error))
        self.error.show()

    def is_changed(self) -> bool:
        try:
            return self._current_bytes() != self.raw
        except EditError:
            return True

    def edited(self) -> bytes:
        """The edited bytes, lengths and checksums fixed when that box is ticked; EditError when invalid."""
        raw = self._current_bytes()
        if self.fix.isChecked():
            packet = Packet(bytearray(raw), self.address.copy())
            if packet.ip is not None or packet.ipv6 is not None:
                packet.fix_lengths_and_checksums()
            raw = packet.raw
        self.error.hide()
        return raw
