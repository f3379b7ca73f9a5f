"""The service's frames: the store a client fills from them equals the store
the session would have filled in-process, and a broken stream is refused."""

import io
import random
import re
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from divertgui.engine.store import CaptureStore
from divertgui.engine.store_record import COLUMNS, Verdict
from divertgui.service import framing
from divertgui.service.client import ServiceClient
from divertgui.service.packet_frames import decode_packets
from divertgui.service.store_relay import StoreRelay
from tests.packet_gen import address_for, packet


def relayed(operations) -> tuple[CaptureStore, CaptureStore]:
    """The same store operations on a CaptureStore and, through frames, on a client's."""
    direct = CaptureStore()
    frames = []
    relay = StoreRelay(frames.append)
    for name, args in operations:
        getattr(direct, name)(*args)
        getattr(relay, name)(*args)
    relay.send_event({"type": "rows", "count": len(relay)})
    received = CaptureStore()
    events = []
    client = ServiceClient("local", received, events.append)
    client._read = io.BytesIO(b"".join(frames)).read
    client._closing = True
    client._read_frames()
    assert events == [{"type": "rows", "count": len(direct), "generation": received.generation}]
    return direct, received


def traffic(seed: int, count: int) -> tuple[list, list]:
    """`count` packets and their addresses, reproduced from `seed`."""
    rng = random.Random(seed)
    raws = [packet(rng) for _ in range(count)]
    return raws, [address_for(rng, raw) for raw in raws]


def assert_same(direct: CaptureStore, received: CaptureStore) -> None:
    assert len(received) == len(direct)
    for name in COLUMNS:
        if name not in ("offset", "host"):
            assert np.array_equal(received.column(name), direct.column(name)), name
    # The client's rows carry its host (the window's first connection), the session's the window's own.
    assert set(received.column("host").tolist()) <= {1} and received.hosts.name(1) == "local"
    for row in range(len(direct)):
        assert received.raw(row) == direct.raw(row)
        assert received.original(row) == direct.original(row)
        assert received.address(row) == direct.address(row)


def test_a_client_store_equals_the_sessions_store():
    rng = random.Random(7)
    raws = [packet(rng) for _ in range(300)]
    addresses = [address_for(rng, raw) for raw in raws]
    walls = [1_700_000_000_000_000_000 + i for i in range(300)]
    verdicts = [rng.choice(list(Verdict)) for _ in range(300)]
    direct, received = relayed([
        ("append_batch", (raws[:200], addresses[:200], verdicts[:200], walls[:200])),
        ("append", (raws[200], addresses[200], Verdict.HELD, walls[200])),
        ("set_verdict", (5, Verdict.DROPPED)),
        ("set_edited", (200, raws[201])),
        ("append_batch", (raws[202:], addresses[202:], Verdict.SNIFFED, walls[202:])),
    ])
    assert_same(direct, received)
    assert received.verdict(200) == Verdict.MODIFIED and received.verdict(5) == Verdict.DROPPED


def test_a_segment_a_rule_grew_past_ips_length_reaches_the_client_whole():
    raws, addresses = traffic(9, 3)
    grown = raws[0] + b"tiger" * 15_000          # 75,000 bytes more: held whole, sent split
    direct, received = relayed([
        ("append_batch", ([grown, raws[1]], addresses[:2], Verdict.MODIFIED, 1)),
        ("append", (raws[2], addresses[2], Verdict.HELD, 2)),
        ("set_edited", (2, grown)),
    ])
    assert_same(direct, received)
    assert received.raw(0) == grown and received.raw(2) == grown


def test_clear_empties_the_client_store_too():
    rng = random.Random(8)
    raws = [packet(rng) for _ in range(20)]
    addresses = [address_for(rng, raw) for raw in raws]
    direct, received = relayed([
        ("append_batch", (raws[:10], addresses[:10], Verdict.PASSED, 1)),
        ("clear", ()),
        ("append_batch", (raws[10:], addresses[10:], Verdict.PASSED, 2)),
    ])
    assert_same(direct, received)
    assert received.generation == direct.generation == 1


def frames_of(data: bytes, limit: int = framing.MAX_COMMAND_FRAME):
    return list(framing.FrameReader(io.BytesIO(data).read, limit))


def test_frames_round_trip_and_end_cleanly():
    data = framing.encode_json({"type": "stop"}) + framing.encode(framing.CLEAR, b"")
    assert frames_of(data) == [(framing.JSON, b'{"type":"stop"}'), (framing.CLEAR, b"")]


@pytest.mark.parametrize("data, says", [
    (b"\x00\x00", "ended inside a frame's header"),
    (b"\x00\x00\x00\x00J", "length is 0"),
    (b"\x00\x00\x00\x05J{}", "ended inside a frame's body"),
    (b"\x7f\xff\xff\xffJ", "larger than the limit"),
    (b"\x00\x00\x00\x01Z", "unknown frame kind"),
])
def test_a_broken_stream_is_refused_with_a_reason(data, says):
    with pytest.raises(framing.FrameError, match=says):
        frames_of(data)


@pytest.mark.parametrize("body, says", [
    (b"\xff", "not UTF-8"), (b"{", "not JSON"), (b"[1]", "JSON object"), (b'{"a": NaN}', "NaN"),
    (b"[" * 100000, "nested too deeply|not JSON"),
])
def test_json_bodies_are_checked(body, says):
    with pytest.raises(ValueError, match=says):
        framing.decode_json(body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_the_frame_decoder_takes_any_bytes_without_crashing(data):
    try:
        for kind, body in frames_of(data, 256):
            assert kind in framing.KINDS and len(body) < 256
            if kind == framing.JSON:
                try:
                    framing.decode_json(body)
                except ValueError:
                    pass
            elif kind == framing.PACKETS:
                try:
                    decode_packets(body)
                except ValueError:
                    pass
    except framing.FrameError:
        pass


def test_the_client_store_names_each_packets_process_as_the_service_did():
    from divertgui.engine.processes import Process
    raws, addresses = traffic(9, 6)
    frames = []
    relay = StoreRelay(frames.append)
    curl, nc = relay.processes.intern(Process(10, "curl", "root")), relay.processes.intern(Process(11, "nc", "ann"))
    relay.append_batch(raws[:3], addresses[:3], Verdict.PASSED, 1, [curl, 0, nc])
    ssh = relay.processes.intern(Process(12, "ssh", "ann"))
    relay.append_batch(raws[3:], addresses[3:], Verdict.PASSED, 1, [ssh, curl, 0])
    relay.send_event({"type": "rows", "count": len(relay)})
    received = CaptureStore()
    received.processes.intern(Process(99, "from an earlier service", "bob"))   # the indexes differ
    events = []
    client = ServiceClient("local", received, events.append)
    client._read = io.BytesIO(b"".join(frames)).read
    client._closing = True
    client._read_frames()
    assert [received.process(row) for row in range(6)] == [
        Process(10, "curl", "root"), None, Process(11, "nc", "ann"), Process(12, "ssh", "ann"),
        Process(10, "curl", "root"), None]
    assert [e["type"] for e in events] == ["rows"], "the processes event is the store's, not the window's"


def test_appended_rows_leave_as_one_frame_before_the_next_event():
    from divertgui.service.packet_frames import decode_verdicts
    raws, addresses = traffic(10, 30)
    frames = []
    relay = StoreRelay(frames.append)
    for start in range(0, 30, 10):
        relay.append_batch(raws[start:start + 10], addresses[start:start + 10], Verdict.HELD, 1)
    relay.set_verdict(3, Verdict.PASSED)
    assert frames == []
    relay.send_event({"type": "rows", "count": len(relay)})
    sent = frames_of(b"".join(frames), framing.MAX_SERVICE_FRAME)
    assert [kind for kind, _ in sent] == [framing.PACKETS, framing.VERDICTS, framing.JSON]
    rows, blob = decode_packets(sent[0][1])
    assert len(rows) == 30 and blob == b"".join(raws)
    assert decode_verdicts(sent[1][1]).tolist() == [(3, int(Verdict.PASSED))]


def test_rows_beyond_the_waiting_limit_leave_without_waiting_for_an_event():
    from divertgui.service.store_relay import MAX_WAITING_BYTES
    raws, addresses = traffic(11, 100)
    frames = []
    relay = StoreRelay(frames.append)
    appended = 0
    while not frames:
        assert appended <= 2 * MAX_WAITING_BYTES, "the waiting rows never left"
        relay.append_batch(raws, addresses, Verdict.PASSED, 1)
        appended += sum(map(len, raws))
    (kind, body), = frames_of(b"".join(frames), framing.MAX_SERVICE_FRAME)
    assert kind == framing.PACKETS and len(decode_packets(body)[0]) == len(relay)
    assert len(relay) > len(raws), "rows waited for company first"


def test_an_ssh_hosts_packets_are_timed_on_this_machines_clock_by_their_wall_clock_times():
    rng = random.Random(9)
    raws = [packet(rng) for _ in range(5)]
    addresses = [address_for(rng, raw) for raw in raws]
    for address in addresses:
        address.timestamp = 7      # the far machine's monotonic clock, which means nothing here
    frames = []
    relay = StoreRelay(frames.append)
    relay.append_batch(raws, addresses, Verdict.PASSED, [10**18 + i for i in range(5)])
    relay.send_event({"type": "rows", "count": len(relay)})
    store = CaptureStore()
    client = ServiceClient("ssh://far.example", store, lambda event: None)
    client._read = io.BytesIO(b"".join(frames)).read
    client._closing = True
    before = time.monotonic_ns() - time.time_ns()
    client._read_frames()
    after = time.monotonic_ns() - time.time_ns()
    offsets = store.column("timestamp") - store.column("wall_ns")
    assert store.column("wall_ns").tolist() == [10**18 + i for i in range(5)]
    assert len(set(offsets.tolist())) == 1 and min(before, after) - 10**6 <= offsets[0] <= max(before, after) + 10**6
    assert store.hosts.names() == ["", "far.example"]


def test_the_client_store_names_each_interface_as_the_service_did():
    from divertgui.engine.address import Address
    raws, _ = traffic(3, 4)
    addresses = [Address(if_idx=if_idx) for if_idx in (2, 2, 5, 9)]
    direct, received = relayed([
        ("name_interfaces", ({2: "veth0", 5: "wg0"},)),
        ("append_batch", (raws, addresses, Verdict.PASSED, 1)),
    ])
    assert [received.interface_name(row) for row in range(4)] == ["veth0", "veth0", "wg0", None]
    assert [direct.interface_name(row) for row in range(4)] == ["veth0", "veth0", "wg0", None]


@pytest.mark.parametrize("pairs, says", [
    ([[2]], "is not an \\[index, name\\] pair"),
    ([[-1, "eth0"]], "interface index -1 is not a 32-bit number"),
    ([[True, "eth0"]], "interface index True"),
    ([[3, ""]], "the name of interface 3 is not 1 to 256 characters"),
    ([[3, 7]], "the name of interface 3"),
])
def test_a_broken_interfaces_event_ends_the_connection_saying_why(pairs, says):
    received = CaptureStore()
    events = []
    client = ServiceClient("local", received, events.append)
    client._read = io.BytesIO(framing.encode_json({"type": "interfaces", "interfaces": pairs})).read
    client._read_frames()
    assert events[-1]["type"] == "error"
    assert "broken frame" in events[-1]["message"]
    assert re.search(says, events[-1]["message"]), events[-1]["message"]
