"""Decoded tree and hex/ASCII bytes of one packet, linked both ways:
selecting a field highlights its bytes, clicking a byte selects its field."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QComboBox, QHBoxLayout, QLabel, QSplitter, QTreeWidget, QTreeWidgetItem,
                               QVBoxLayout, QWidget)

from divertgui.views.hex_view import HexView

SPAN_ROLE = Qt.ItemDataRole.UserRole


def node_text(node) -> str:
    """A dissect.Node as Wireshark shows it: "label: value", or the label alone."""
    return f"{node.label}: {node.value}" if node.value not in (None, "") else str(node.label)


class PacketDetails(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.tree = QTreeWidget(self)
        self.tree.setHeaderHidden(True)
        self.tree.setUniformRowHeights(True)
        self.tree.setObjectName("details_tree")
        self.hex = HexView(self)
        self.version = QComboBox(self)
        self.version.addItems(["As sent (edited)", "As captured (original)"])
        self.version.setToolTip("This packet was edited before it was forwarded; both versions are kept.")
        self.version.currentIndexChanged.connect(self._show_version)
        self.version_label = QLabel("Modified packet:", self)
        header = QHBoxLayout()
        header.setContentsMargins(4, 0, 4, 0)
        header.addWidget(self.version_label)
        header.addWidget(self.version)
        header.addStretch(1)
        self.header = QWidget(self)
        self.header.setLayout(header)
        self.header.hide()

        split = QSplitter(Qt.Orientation.Horizontal, self)
        split.addWidget(self.tree)
        split.addWidget(self.hex)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 0)
        self.hex.setMinimumWidth(self.hex.fontMetrics().horizontalAdvance("0" * 74) + 24)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.header)
        layout.addWidget(split, 1)

        self.packets: tuple[bytes, bytes | None] = (b"", None)
        self.process = None
        self._linking = False
        self.tree.currentItemChanged.connect(self._on_field)
        self.hex.byte_clicked.connect(self._on_byte)

    def show_packet(self, raw: bytes, original: bytes | None = None, process=None) -> None:
        """`original`: the captured bytes when `raw` is an edit of them; `process`: the local
        process its flow belongs to (an engine.processes.Process), when known."""
        self.packets = (bytes(raw), original)
        self.process = process
        self.header.setVisible(original is not None)
        self.version.blockSignals(True)
        self.version.setCurrentIndex(0)
        self.version.blockSignals(False)
        self._show(raw)

    def clear(self) -> None:
        self.packets = (b"", None)
        self.process = None
        self.header.hide()
        self.tree.clear()
        self.hex.set_data(b"")

    def _show_version(self, index: int) -> None:
        raw, original = self.packets
        self._show(original if index == 1 and original is not None else raw)

    def _show(self, raw: bytes) -> None:
        from divertgui.engine import dissect
        self.tree.clear()
        self.hex.set_data(raw)
        if self.process is not None:
            self.tree.addTopLevelItem(self._process_item(self.process))
        for node in dissect.decode_tree(raw):
            self.tree.addTopLevelItem(self._item(node))
        for index in range(self.tree.topLevelItemCount()):
            self.tree.topLevelItem(index).setExpanded(True)

    def _item(self, node) -> QTreeWidgetItem:
        item = QTreeWidgetItem([node_text(node)])
        offset, length = node.offset, node.length
        item.setData(0, SPAN_ROLE, (offset, length))
        item.setToolTip(0, f"bytes {offset}..{offset + length - 1}" if length > 1 else f"byte {offset}")
        for child in node.children:
            item.addChild(self._item(child))
        return item

    @staticmethod
    def _process_item(process) -> QTreeWidgetItem:
        item = QTreeWidgetItem([f"Process: {process.label()}"])
        item.setData(0, SPAN_ROLE, (0, 0))    # no bytes of the packet say it
        for text in (f"Process ID: {process.pid}", f"Name: {process.name}", f"User: {process.user}"):
            child = QTreeWidgetItem([text])
            child.setData(0, SPAN_ROLE, (0, 0))
            item.addChild(child)
        return item

    def _on_field(self, item, _previous=None) -> None:
        if item is None:
            self.hex.highlight(None)
            return
        if not self._linking:
            offset, length = item.data(0, SPAN_ROLE)
            self.hex.highlight((offset, length) if length else None)

    def item_at_byte(self, offset: int) -> QTreeWidgetItem | None:
        """The innermost field whose bytes include `offset`."""
        best = None
        stack = [self.tree.topLevelItem(i) for i in range(self.tree.topLevelItemCount())]
        while stack:
            item = stack.pop()
            start, length = item.data(0, SPAN_ROLE)
            if length and start <= offset < start + length:
                if best is None or length <= best.data(0, SPAN_ROLE)[1]:
                    best = item
                stack.extend(item.child(i) for i in range(item.childCount()))
        return best

    def _on_byte(self, offset: int) -> None:
        item = self.item_at_byte(offset)
        if item is None:
            return
        self._linking = True
        try:
            parent = item.parent()
            while parent is not None:
                parent.setExpanded(True)
                parent = parent.parent()
            self.tree.setCurrentItem(item)
            self.tree.scrollToItem(item)
        finally:
            self._linking = False
        start, length = item.data(0, SPAN_ROLE)
        self.hex.highlight((start, length))
