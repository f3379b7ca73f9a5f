"""FLOW, SOCKET and REFLECT event records: made from a handle's address, as JSON and back,
saved in a capture file's custom blocks and read back field for field; tshark reads the file."""

from __future__ import annotations

import json
import random
import struct

import pytest

from divertgui.engine.address import Address, EndpointData, Event, Flag, Layer, ReflectData
from divertgui.engine.event_records import (
    EventRecord,
    EventRecordError,
    FlowData,
    HandleData,
    from_address,
    from_json,
)
from divertgui.engine.pcapng import CUSTOM_BLOCK, PEN, CaptureReader
from divertgui.engine.processes import Process
from divertgui.engine.saved_capture import event_block, load_into, save_rows
from divertgui.engine.store import CaptureStore
from tests.packet_gen import ipv4_packet
from tests.unit.test_pcapng import tshark_fields

BASE_NS = 1_790_000_000_000_000_000
MAPPED_LOOPBACK = 0xFFFF7F000001
DOCUMENTATION = 0x20010DB8 << 96          # 2001:db8::


def sample_records() -> list[EventRecord]:
    """One record of every event, with every field set to something other than its default."""
    records = []
    for number, event in enumerate(e for e in Event if e != Event.PACKET):
        layer = Layer[event.name.split("_", 1)[0]]
        flow = handle = None
        if layer == Layer.REFLECT:
            handle = HandleData(Layer.SOCKET, -7 - number, int(Flag.SNIFF | Flag.RECV_ONLY), BASE_NS - 5 + number,
                                f'event == CONNECT and remotePort == {8000 + number} and processId != 1 — "é"')
        else:
            ipv6 = number % 3 == 0
            local, remote = ((DOCUMENTATION + number, DOCUMENTATION + 0x100 + number) if ipv6
                             else (MAPPED_LOOPBACK, MAPPED_LOOPBACK + number))
            flow = FlowData((1 << 64) - 1 - number, 40 + number, 17 if number % 2 else 6, local, 50000 + number,
                            remote, 443 + number, bool(number % 2), number % 3 == 1, ipv6)
        # Half of them seen by a named host of a window with several, half by the window's only one.
        records.append(EventRecord(BASE_NS + number * 1_000_003, layer, event, 4_000_000 + number,
                                   f"proc {number} ✓", f"user{number}", flow, handle,
                                   f"web{number} (2)" if number % 2 else ""))
    return records


def test_every_event_round_trips_through_json():
    for record in sample_records():
        text = json.dumps(record.to_json())
        assert from_json(json.loads(text)) == record


def test_a_record_from_a_socket_event_and_from_a_reflect_event():
    wall = 1_000_000
    describe = {17: Process(17, "curl", "ann")}.get
    socket_event = Address(layer=Layer.SOCKET, event=Event.SOCKET_CONNECT, timestamp=5, outbound=True,
                           loopback=True, sniffed=True,
                           flow=EndpointData(9, 3, 17, MAPPED_LOOPBACK, MAPPED_LOOPBACK, 41000, 80, 6))
    record = from_address(socket_event, b"", wall, describe)
    assert record == EventRecord(wall + 5, Layer.SOCKET, Event.SOCKET_CONNECT, 17, "curl", "ann",
                                 FlowData(9, 3, 6, MAPPED_LOOPBACK, 41000, MAPPED_LOOPBACK, 80, True, True, False))
    assert record.to_json()["flow"]["remote"] == "::ffff:7f00:1" and record.event_name == "CONNECT"
    reflect_event = Address(layer=Layer.REFLECT, event=Event.REFLECT_OPEN, timestamp=8, sniffed=True,
                            reflect=ReflectData(2, 17, Layer.NETWORK, int(Flag.SNIFF), -3))
    record = from_address(reflect_event, b"tcp.DstPort == 80", wall, describe)
    assert record.handle == HandleData(Layer.NETWORK, -3, int(Flag.SNIFF), wall + 2, "tcp.DstPort = 80")
    assert (record.time_ns, record.pid, record.process, record.flow) == (wall + 8, 17, "curl", None)


def _json(**changes) -> dict:
    value = sample_records()[3].to_json()       # SOCKET CONNECT
    for path, new in changes.items():
        target, *rest = path.split("__")
        if rest:
            value[target][rest[0]] = new
        elif new is None:
            del value[target]
        else:
            value[target] = new
    return value


@pytest.mark.parametrize("changes, says", [
    ({"layer": "NETWORK"}, "event.layer must be FLOW, SOCKET or REFLECT, not NETWORK"),
    ({"layer": "SIDEWAYS"}, "event.layer must be one of"),
    ({"event": "OPEN"}, "event.event must be one of BIND, CONNECT, LISTEN, ACCEPT, CLOSE at the SOCKET layer"),
    ({"pid": -1}, r"event.pid must be a whole number in 0..4294967295, not -1"),
    ({"pid": True}, "event.pid must be a whole number"),
    ({"time_ns": 1.5}, "event.time_ns must be a whole number"),
    ({"process": "x" * 9000}, "event.process must be text of at most 8192 characters"),
    ({"flow": None}, "event lacks flow"),
    ({"flow": []}, "event.flow must be an object"),
    ({"flow__local_port": 70000}, r"event.flow.local_port must be a whole number in 0..65535, not 70000"),
    ({"flow__local": "300.1.1.1"}, "event.flow.local must be an IPv6 address"),
    ({"flow__outbound": 1}, "event.flow.outbound must be true or false, not 1"),
    ({"flow__extra": 1}, "event.flow has the unknown field 'extra'"),
    ({"handle": {}}, "event has the unknown field 'handle'"),
])
def test_a_malformed_record_says_which_field_and_why(changes, says):
    with pytest.raises(EventRecordError, match=says):
        from_json(_json(**changes))


def test_a_reflect_record_checks_its_handle():
    value = sample_records()[-1].to_json()
    value["handle"]["priority"] = 40000
    with pytest.raises(EventRecordError, match=r"event.handle.priority must be a whole number in -30000..30000"):
        from_json(value)
    value["handle"] = {"layer": "NETWORK"}
    with pytest.raises(EventRecordError, match="event.handle lacks filter, flags, opened_ns, priority"):
        from_json(value)


def _saved(tmp_path, records):
    store = CaptureStore()
    raw = ipv4_packet(random.Random(5))
    store.append_batch([raw, raw], [Address(outbound=True, loopback=True, if_idx=1)] * 2, 1,
                       [BASE_NS, BASE_NS + 10])
    path = tmp_path / "events.pcapng"
    assert save_rows(store, path, range(2), records) == 2
    return path


def test_events_saved_in_a_capture_file_come_back_field_for_field_and_tshark_reads_it(tmp_path):
    records = sample_records()
    path = _saved(tmp_path, records)
    loaded = load_into(CaptureStore(), CaptureReader(path))
    assert (loaded.count, loaded.error, loaded.bad_events) == (2, None, [])
    assert list(loaded.events) == records
    # Wireshark numbers the packets as divertgui does, and lists each event after them as a custom block.
    shown = tshark_fields(path, "frame.number", "frame.protocols")
    assert [row[1] for row in shown] == ["raw:ip:data"] * 2 + ["data"] * len(records)


def test_an_unreadable_event_block_is_reported_and_the_rest_loads(tmp_path):
    records = sample_records()[:2]
    path = _saved(tmp_path, records)
    data = bytearray(path.read_bytes())
    first = bytes(event_block(records[0]))
    at = data.index(first)
    data[at + 8] = ord("[")                  # the JSON now starts with a bracket it never closes
    path.write_bytes(bytes(data))
    loaded = load_into(CaptureStore(), CaptureReader(path))
    assert list(loaded.events) == records[1:]
    assert len(loaded.bad_events) == 1 and loaded.bad_events[0].startswith("event block 1 is not JSON")


def test_custom_blocks_of_other_programs_are_passed_over(tmp_path):
    path = _saved(tmp_path, sample_records()[:1])
    data = path.read_bytes()
    other = struct.pack("<IIII", CUSTOM_BLOCK, 20, PEN + 1, 0x12345678) + struct.pack("<I", 20)
    path.write_bytes(data + other)
    loaded = load_into(CaptureStore(), CaptureReader(path))
    assert (loaded.count, list(loaded.events)) == (2, sample_records()[:1])
