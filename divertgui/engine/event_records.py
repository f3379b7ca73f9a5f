"""FLOW, SOCKET and REFLECT events as records: made from a handle's event, sent to the
window and saved in capture files as JSON objects, and read back from either as
untrusted input.

A record's JSON object:
    time_ns   int     wall clock, nanoseconds since the Unix epoch
    layer     "FLOW" | "SOCKET" | "REFLECT"
    event     the event's name at that layer, as the filter language spells it:
              ESTABLISHED, DELETED; BIND, CONNECT, LISTEN, ACCEPT, CLOSE; OPEN, CLOSE
    pid       int     the process (WinDivert's ProcessId)
    process   str     its name when the event was seen ("" when it was already gone)
    user      str     its user, likewise
    flow      FLOW and SOCKET: {"endpoint", "parent_endpoint", "protocol": int,
              "local", "remote": IPv6 text (IPv4 as IPv4-mapped), "local_port", "remote_port": int,
              "outbound", "loopback", "ipv6": bool}
    handle    REFLECT: the divert handle opened or closed: {"layer": a layer name,
              "priority": int, "flags": int, "opened_ns": wall-clock ns, "filter": str}
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Callable

from divertgui.engine.address import PRIORITY_MAX, PRIORITY_MIN, Address, Event, Layer
from divertgui.engine.errors import EventRecordError

EVENT_LAYERS = (Layer.FLOW, Layer.SOCKET, Layer.REFLECT)
MAX_TEXT = 8192               # characters of a process name, a user or a handle's filter
MAX_U64 = (1 << 64) - 1


@dataclasses.dataclass(frozen=True, slots=True)
class FlowData:
    """The flow or socket of a FLOW or SOCKET event (WinDivert's Flow/Socket fields)."""

    endpoint: int
    parent_endpoint: int
    protocol: int
    local: int                  # 128 bits, IPv4 as ::ffff:a.b.c.d
    local_port: int
    remote: int
    remote_port: int
    outbound: bool
    loopback: bool
    ipv6: bool


@dataclasses.dataclass(frozen=True, slots=True)
class HandleData:
    """The divert handle of a REFLECT event."""

    layer: Layer
    priority: int
    flags: int
    opened_ns: int              # wall clock
    filter: str


@dataclasses.dataclass(frozen=True, slots=True)
class EventRecord:
    time_ns: int
    layer: Layer
    event: Event
    pid: int
    process: str = ""
    user: str = ""
    flow: FlowData | None = None
    handle: HandleData | None = None
    host: str = ""              # the window's name for the capture service that saw it; "" for none

    @property
    def event_name(self) -> str:
        """ESTABLISHED, CONNECT, OPEN, ...: the event as the filter language names it."""
        return self.event.name.split("_", 1)[1]

    def to_json(self) -> dict:
        record = {"time_ns": self.time_ns, "layer": self.layer.name, "event": self.event_name, "pid": self.pid,
                  "process": self.process, "user": self.user}
        if self.flow is not None:
            flow = dataclasses.asdict(self.flow)
            flow["local"], flow["remote"] = _address_text(self.flow.local), _address_text(self.flow.remote)
            record["flow"] = flow
        if self.handle is not None:
            record["handle"] = {**dataclasses.asdict(self.handle), "layer": self.handle.layer.name}
        if self.host:
            record["host"] = self.host
        return record


def from_address(address: Address, data: bytes, wall_offset_ns: int, describe: Callable) -> EventRecord:
    """The record of an event a FLOW, SOCKET or REFLECT handle received. `wall_offset_ns` turns
    its monotonic times into wall-clock ones; `describe(pid)` is a (pid, name, user) for the pid,
    whose name the event's own (EndpointData.process_name) stands in for when it is empty."""
    flow = handle = None
    if address.reflect is not None:
        reflect = address.reflect
        pid = reflect.process_id
        handle = HandleData(Layer(reflect.layer), reflect.priority, reflect.flags,
                            reflect.timestamp + wall_offset_ns, handle_filter_text(data, Layer(reflect.layer)))
    else:
        endpoint = address.flow
        pid = endpoint.process_id
        flow = FlowData(endpoint.endpoint_id, endpoint.parent_endpoint_id, endpoint.protocol, endpoint.local_addr,
                        endpoint.local_port, endpoint.remote_addr, endpoint.remote_port, address.outbound,
                        address.loopback, address.ipv6)
    _, name, user = describe(pid)
    if not name and address.flow is not None:
        name = address.flow.process_name           # the process has ended: the kernel's name for it
    return EventRecord(address.timestamp + wall_offset_ns, address.layer, address.event, pid, name, user,
                       flow, handle)


def handle_filter_text(data: bytes, layer: Layer) -> str:
    """A handle's filter in canonical form, from a REFLECT event's filter object."""
    from divertgui.engine.filter import FilterError, format_filter
    text = bytes(data).decode(errors="replace")
    try:
        return format_filter(text, layer)
    except FilterError:
        return text


# -- reading a record from JSON -----------------------------------------------------------------

def _address_text(value: int) -> str:
    return str(ipaddress.IPv6Address(value))


def _integer(low: int, high: int):
    def read(where: str, value):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise EventRecordError(f"{where} must be a whole number in {low}..{high}, not {_shown(value)}")
        return value
    return read


def _flag(where: str, value):
    if not isinstance(value, bool):
        raise EventRecordError(f"{where} must be true or false, not {_shown(value)}")
    return value


def _text(where: str, value):
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise EventRecordError(f"{where} must be text of at most {MAX_TEXT} characters, not {_shown(value)}")
    return value


def _address(where: str, value):
    try:
        return int(ipaddress.IPv6Address(_text(where, value)))
    except ipaddress.AddressValueError:
        raise EventRecordError(f"{where} must be an IPv6 address (IPv4 as ::ffff:a.b.c.d), "
                               f"not {_shown(value)}") from None


def _layer(where: str, value):
    if not isinstance(value, str) or value not in Layer.__members__:
        raise EventRecordError(f"{where} must be one of {', '.join(Layer.__members__)}, not {_shown(value)}")
    return Layer[value]


_TIME = _integer(0, (1 << 63) - 1)
_PID = _integer(0, (1 << 32) - 1)
_FLOW_FIELDS = {"endpoint": _integer(0, MAX_U64), "parent_endpoint": _integer(0, MAX_U64),
                "protocol": _integer(0, 255), "local": _address, "local_port": _integer(0, 65535),
                "remote": _address, "remote_port": _integer(0, 65535), "outbound": _flag, "loopback": _flag,
                "ipv6": _flag}
_HANDLE_FIELDS = {"layer": _layer, "priority": _integer(PRIORITY_MIN, PRIORITY_MAX),
                  "flags": _integer(0, (1 << 32) - 1), "opened_ns": _TIME, "filter": _text}


def _shown(value) -> str:
    return "null" if value is None else repr(value)[:60]


def _object(where: str, value, fields: dict) -> dict:
    if not isinstance(value, dict):
        raise EventRecordError(f"{where} must be an object, not {_shown(value)}")
    unknown = set(value) - set(fields)
    if unknown:
        raise EventRecordError(f"{where} has the unknown field {sorted(unknown)[0][:60]!r}")
    missing = set(fields) - set(value)
    if missing:
        raise EventRecordError(f"{where} lacks {', '.join(sorted(missing))}")
    return {name: read(f"{where}.{name}", value[name]) for name, read in fields.items()}


def from_json(value, where: str = "event") -> EventRecord:
    """The record a JSON object describes; EventRecordError naming the field when it does not."""
    top = {"time_ns": _TIME, "layer": _layer, "event": _text, "pid": _PID, "process": _text, "user": _text}
    if not isinstance(value, dict):
        raise EventRecordError(f"{where} must be an object, not {_shown(value)}")
    layer_data = "handle" if value.get("layer") == "REFLECT" else "flow"
    optional = {"host": _text} if "host" in value else {}
    fields = _object(where, value, {**top, layer_data: lambda w, v: v, **optional})
    layer = fields["layer"]
    if layer not in EVENT_LAYERS:
        raise EventRecordError(f"{where}.layer must be FLOW, SOCKET or REFLECT, not {layer.name}")
    event = Event.__members__.get(f"{layer.name}_{fields['event']}")
    if event is None:
        names = [e.name.split("_", 1)[1] for e in Event if e.name.startswith(layer.name + "_")]
        raise EventRecordError(f"{where}.event must be one of {', '.join(names)} at the {layer.name} layer, "
                               f"not {_shown(fields['event'])}")
    flow = handle = None
    if layer == Layer.REFLECT:
        handle = HandleData(**_object(f"{where}.handle", value["handle"], _HANDLE_FIELDS))
    else:
        flow = FlowData(**_object(f"{where}.flow", value["flow"], _FLOW_FIELDS))
    return EventRecord(fields["time_ns"], layer, event, fields["pid"], fields["process"], fields["user"],
                       flow, handle, fields.get("host", ""))
