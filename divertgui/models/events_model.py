"""The Events view's rows: the FLOW, SOCKET and REFLECT events of the capture, in arrival order.

Events belong to the capture store as it was when they came (its
generation): a store emptied by Clear or File > Open takes its events
with it, and events of a store already emptied are not shown. Each host
(a store host index) watches its own layers: an "events" event that the
window's hosts tagged with `host` and `host_name` says what that host
watches, and its records carry the host's name.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import NamedTuple

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt

from divertgui.engine.address import Flag
from divertgui.engine.address_text import event_endpoint_text
from divertgui.engine.conversations import protocol_name
from divertgui.engine.errors import EventRecordError
from divertgui.engine.event_records import EventRecord, from_json

COLUMNS = ("Time", "Layer", "Event", "Process", "Protocol", "Local", "Remote", "Handle", "Host")
HOST = COLUMNS.index("Host")


def handle_text(record: EventRecord) -> str:
    handle = record.handle
    flags = Flag(handle.flags)
    return f"{handle.layer.name}, priority {handle.priority}, {flags.name or 'no flags'}: {handle.filter}"


def cell_text(record: EventRecord, column: int) -> str:
    if column == 0:
        return datetime.datetime.fromtimestamp(record.time_ns / 1e9).strftime("%H:%M:%S.%f")
    if column == 1:
        return record.layer.name
    if column == 2:
        return record.event_name
    if column == 3:
        return f"{record.process or '?'} ({record.pid})"
    if column == HOST:
        return record.host
    flow = record.flow
    if column == 7:
        return handle_text(record) if record.handle is not None else ""
    if flow is None:
        return ""
    if column == 4:
        return protocol_name(flow.protocol)
    if column == 5:
        return event_endpoint_text(flow.local, flow.local_port, flow.ipv6)
    return event_endpoint_text(flow.remote, flow.remote_port, flow.ipv6)


class Watching(NamedTuple):
    """What one host's event capture watches: layer name -> filter, and the cgroup ("": every process)."""

    name: str
    layers: dict[str, str]
    cgroup: str


class EventsModel(QAbstractTableModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.records: list[EventRecord] = []
        self.generation = 0
        self.watching: dict[int, Watching] = {}     # store host index -> its event capture, while it runs
        self.malformed = 0                      # records that were not well formed, left out
        self.first_problem = ""                 # what was wrong with the first of them

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.records)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or role not in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return None
        return cell_text(self.records[index.row()], index.column())

    def record(self, row: int) -> EventRecord:
        return self.records[row]

    def capturing(self, host: int | None = None) -> dict[str, str]:
        """The layers (name -> filter) that host `host` watches; None: that any host watches."""
        chosen = self.watching.values() if host is None else [self.watching.get(host, Watching("", {}, ""))]
        return {name: shown for watching in chosen for name, shown in watching.layers.items()}

    def host_gone(self, host: int | None) -> None:
        """Host `host` (None: every host) watches nothing any more."""
        if host is None:
            self.watching.clear()
        else:
            self.watching.pop(host, None)

    def apply_event(self, message: dict) -> int:
        """Takes an "events" event; returns how many records it added."""
        generation = int(message.get("generation", 0))
        if generation < self.generation:
            return 0            # events of a store that has since been emptied
        self.store_emptied(generation)
        host, name = int(message.get("host", 0)), str(message.get("host_name") or "")
        layers = dict(message.get("capturing") or {})
        if layers:
            self.watching[host] = Watching(name, layers, str(message.get("cgroup") or ""))
        else:
            self.watching.pop(host, None)
        records = []
        for value in message.get("events") or ():
            try:
                record = from_json(value)
                records.append(dataclasses.replace(record, host=name) if name else record)
            except EventRecordError as exc:
                self.malformed += 1
                self.first_problem = self.first_problem or str(exc)
        if records:
            first = len(self.records)
            self.beginInsertRows(QModelIndex(), first, first + len(records) - 1)
            self.records.extend(records)
            self.endInsertRows()
        return len(records)

    def store_emptied(self, generation: int) -> None:
        """The capture store has been emptied `generation` times: older events go."""
        if generation > self.generation:
            self.beginResetModel()
            self.records = []
            self.generation = generation
            self.endResetModel()
