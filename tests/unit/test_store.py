"""The capture store and display indexes, on real packet bytes."""

from __future__ import annotations

import functools
import random
import threading

import numpy as np
import pytest

from divertgui.engine.address import Address, Layer
from divertgui.engine.backends.demo import echo_packet, ip_packet, tcp_packet, udp_packet
from divertgui.engine.filter import compile_filter
from divertgui.engine.display_index import DisplayIndex
from divertgui.engine.store import CHUNK_ROWS, RECORD, VECTOR_ROWS, CaptureStore, Verdict, summarise
from tests import packet_gen

A4, B4 = bytes((10, 0, 0, 2)), bytes((198, 51, 100, 10))
A6, B6 = bytes.fromhex("fd00" + "00" * 13 + "02"), bytes.fromhex("20010db8" + "00" * 11 + "10")


def tcp4(sport=40000, dport=80, payload=b"GET / HTTP/1.1\r\n\r\n"):
    return tcp_packet(A4, B4, sport, dport, 1000, 2000, 0x18, payload)


def test_append_reads_back_bytes_address_and_columns():
    store = CaptureStore()
    packets = [
        (tcp4(), Address(outbound=True, if_idx=2, timestamp=11)),
        (udp_packet(B6, A6, 53, 41000, b"\x12\x34answer"), Address(ipv6=True, if_idx=3, timestamp=12)),
        (echo_packet(A4, B4, False, 7, 1, b"ping"), Address(outbound=True, loopback=True, if_idx=1, timestamp=13)),
        (echo_packet(A6, B6, True, 7, 1, b"pong"), Address(ipv6=True, sniffed=True, timestamp=14)),
    ]
    for i, (raw, address) in enumerate(packets):
        assert store.append(raw, address, Verdict.PASSED, 1_000 + i) == i
    assert len(store) == 4
    for i, (raw, address) in enumerate(packets):
        assert store.raw(i) == raw
        assert store.address(i) == address
        assert store.original(i) is None
    assert store.column("wall_ns").tolist() == [1000, 1001, 1002, 1003]
    assert store.column("timestamp").tolist() == [11, 12, 13, 14]
    assert store.column("length").tolist() == [len(p[0]) for p in packets]
    assert store.column("outbound").tolist() == [True, False, True, False]
    assert store.column("loopback").tolist() == [False, False, True, False]
    assert store.column("if_idx").tolist() == [2, 3, 1, 0]
    assert store.column("ip_version").tolist() == [4, 6, 4, 6]
    assert store.column("protocol").tolist() == [6, 17, 1, 58]
    assert store.column("src_port").tolist() == [40000, 53, 0, 0]
    assert store.column("dst_port").tolist() == [80, 41000, 0, 0]
    assert store.column("verdict").tolist() == [0, 0, 0, 0]
    assert store.column("plain").all()
    assert store.column("length", 1, 3).tolist() == [len(packets[1][0]), len(packets[2][0])]
    assert store.bytes_stored == sum(len(p[0]) for p in packets)


def test_conversation_is_shared_by_both_directions_only():
    store = CaptureStore()
    store.append(tcp_packet(A4, B4, 40000, 80, 1, 0, 2), Address(outbound=True), Verdict.PASSED, 0)
    store.append(tcp_packet(B4, A4, 80, 40000, 9, 2, 0x12), Address(), Verdict.PASSED, 0)
    store.append(tcp_packet(A4, B4, 40001, 80, 1, 0, 2), Address(outbound=True), Verdict.PASSED, 0)
    ids = store.column("conversation").tolist()
    assert ids[0] == ids[1] != ids[2]


def test_edit_keeps_the_original_and_marks_the_row_modified():
    store = CaptureStore()
    original = tcp4(dport=80)
    store.append(original, Address(outbound=True), Verdict.HELD, 5)
    store.append(tcp4(sport=1), Address(outbound=True), Verdict.HELD, 6)
    edited = tcp4(dport=8080, payload=b"GET /edited HTTP/1.1\r\n\r\n")
    store.set_edited(0, edited)
    assert store.raw(0) == edited
    assert store.original(0) == original
    assert store.verdict(0) == Verdict.MODIFIED
    assert store.column("dst_port").tolist()[0] == 8080
    assert store.column("length").tolist()[0] == len(edited)
    store.set_edited(0, tcp4(dport=81))
    assert store.original(0) == original, "a second edit keeps the first original"
    assert store.raw(1) == tcp4(sport=1), "the neighbour row is untouched"
    store.set_verdict(1, Verdict.DROPPED)
    assert store.column("verdict").tolist() == [Verdict.MODIFIED, Verdict.DROPPED]


def test_bad_requests_say_what_is_wrong():
    store = CaptureStore()
    store.append(tcp4(), Address(), Verdict.PASSED, 0)
    with pytest.raises(IndexError, match="row 1 is not in the store"):
        store.raw(1)
    with pytest.raises(KeyError, match="no store column 'colour'"):
        store.column("colour")
    with pytest.raises(ValueError, match="2 packets but 1 addresses"):
        store.append_batch([tcp4(), tcp4()], [Address()], Verdict.PASSED, 0)


@pytest.mark.parametrize("raw", [b"", b"\x45", tcp4()[:30], b"\x60" + b"\0" * 20, b"\x99" * 60,
                                 tcp4()[:20] + b"\x00\x50"])
def test_truncated_and_foreign_bytes_are_stored_as_they_are(raw):
    store = CaptureStore()
    store.append(raw, Address(), Verdict.PASSED, 0)
    assert store.raw(0) == raw
    assert not store.column("plain")[0]
    summarise(raw)   # never raises


def test_rows_already_published_never_move_while_appending():
    store = CaptureStore()
    raw = udp_packet(A4, B4, 1000, 2000, b"x" * 200)
    first = store.append_batch([raw] * 10, [Address(timestamp=t) for t in range(10)], Verdict.PASSED, 0)
    record_chunk = store._records[0]
    arena = store._arenas[0]
    count = CHUNK_ROWS + 30_000   # over a record chunk and several arenas
    store.append_batch([raw] * count, [Address()] * count, Verdict.PASSED, 0)
    assert store._records[0] is record_chunk and store._arenas[0] is arena
    assert len(store._arenas) > 1 and len(store._records) > 1
    assert [store.raw(r) for r in first] == [raw] * 10
    assert store.raw(len(store) - 1) == raw
    assert store.column("timestamp", 0, 10).tolist() == list(range(10))


def test_reader_thread_sees_only_complete_rows():
    store = CaptureStore()
    rng = random.Random(5)
    packets = [udp_packet(A4, B4, i, 53, rng.randbytes(rng.randrange(1, 400))) for i in range(20_000)]
    problems = []

    def read():
        seen = 0
        while seen < len(packets):
            count = len(store)
            for row in range(seen, count):
                if store.raw(row) != packets[row] or store.column("src_port", row, row + 1)[0] != row:
                    problems.append(row)
            seen = count

    reader = threading.Thread(target=read)
    reader.start()
    for start in range(0, len(packets), 250):
        batch = packets[start:start + 250]
        store.append_batch(batch, [Address()] * len(batch), Verdict.PASSED, 0)
    reader.join(timeout=60)
    assert not reader.is_alive()
    assert problems == []


def test_overhead_beyond_packet_bytes_stays_within_67_bytes_per_packet():
    store = CaptureStore()
    raw = tcp4(payload=b"y" * 300)
    count = 100_000
    for start in range(0, count, 4096):
        store.append_batch([raw] * 4096, [Address()] * 4096, Verdict.PASSED, 0)
    assert RECORD.itemsize <= 52
    # 52 bytes of record (with the 2-byte process and 1-byte host indexes), the rest the last chunk's and
    # arena's unused room.
    assert store.overhead_bytes() / len(store) <= 67


def test_clear_empties_and_starts_a_new_generation():
    store = CaptureStore()
    store.append(tcp4(), Address(), Verdict.PASSED, 0)
    generation = store.generation
    store.clear()
    assert len(store) == 0 and store.generation == generation + 1
    assert store.column("length").tolist() == []
    store.append(tcp4(sport=7), Address(), Verdict.PASSED, 0)
    assert store.raw(0) == tcp4(sport=7)


# -- display indexes ------------------------------------------------------------------

def _generated_store(seed: int, count: int):
    rng = random.Random(seed)
    store = CaptureStore()
    packets = []
    for _ in range(count):
        raw = packet_gen.packet(rng)
        address = packet_gen.address_for(rng, raw)
        packets.append((raw, address))
    store.append_batch([p[0] for p in packets], [p[1] for p in packets], Verdict.PASSED, 0)
    return store, packets


FILTERS = [
    "ip.SrcAddr == 10.0.0.2", "ipv6.DstAddr >= 2001:db8::", "localAddr == 10.0.0.2 and remotePort == 53",
    "remoteAddr == 198.51.100.10", "tcp.Syn and tcp.Ack", "tcp.PayloadLength > 100", "udp.Payload[0] == 0xC3",
    "tcp.Payload32[-1] != 0", "packet16[-2] > 5", "ip.TTL == 64 and ip.DF", "icmp.Type == 8 or icmpv6.Type == 128",
    "udp.Length < 100", "ipv6.FlowLabel == 0", "ip.Id > 0x1000", "tcp.Window == 64240",
    "true", "false", "tcp", "udp", "icmp or icmpv6", "ip", "ipv6", "not tcp", "outbound", "inbound and udp",
    "tcp.DstPort == 80", "not tcp.DstPort == 80", "tcp.DstPort != 80", "udp.SrcPort == 53 or udp.DstPort == 53",
    "tcp and tcp.DstPort >= 1024 and not loopback", "length > 100", "protocol == TCP", "ifIdx == 2",
    "tcp.SrcPort", "not udp.SrcPort", "loopback || impostor", "tcp.Payload[0] == 0x47",
    "ip.SrcAddr == 10.0.0.1 or tcp", "(tcp ? udp : icmp)", "packet[0] == 0x45 and length < 200",
    "ipv6.SrcAddr == ::1", "tcp.Syn and tcp.DstPort == 443",
]


@pytest.mark.parametrize("text", FILTERS)
def test_display_index_equals_matching_every_row(text):
    store, packets = _generated_store(seed=len(text), count=1500)
    traffic = demo_packets(1500)
    store.append_batch([p[0] for p in traffic], [p[1] for p in traffic], Verdict.PASSED, 0)
    packets += traffic
    compiled = compile_filter(text, Layer.NETWORK)
    expected = [i for i, (raw, address) in enumerate(packets) if compiled.match(raw, address)]
    index = DisplayIndex(store, text)
    assert index.update() == len(expected)
    assert index.rows.tolist() == expected
    assert len(index) == len(expected)


@functools.cache
def demo_packets(count):
    from divertgui.engine.backends.demo import DemoBackend
    clock = [10**10]

    def sleep(seconds):
        clock[0] += int(seconds * 1e9) + 1000

    backend = DemoBackend(seed=2, rate=5000, clock=lambda: clock[0], sleep=sleep)
    backend.open(None, Layer.NETWORK, 0, 0, {})
    packets = []
    while len(packets) < count:
        for captured in backend.recv_batch(255, 0.01):
            backend.verdict(captured.ticket, captured.raw)
            packets.append((captured.raw, captured.address))
    return packets[:count]


def test_display_index_over_generated_filters_matches_the_compiled_filter():
    store, packets = _generated_store(seed=99, count=600)
    traffic = demo_packets(1500)
    store.append_batch([p[0] for p in traffic], [p[1] for p in traffic], Verdict.PASSED, 0)
    packets += traffic
    store.set_edited(700, tcp4(dport=8080))
    packets[700] = (tcp4(dport=8080), packets[700][1])
    rng = random.Random(4)
    for _ in range(150):
        text = packet_gen.filter_text(rng)
        try:
            compiled = compile_filter(text, Layer.NETWORK)
        except ValueError:
            continue
        expected = [i for i, (raw, address) in enumerate(packets) if compiled.match(raw, address)]
        index = DisplayIndex(store, compiled)
        index.update()
        assert index.rows.tolist() == expected, text


class CountingFilter:
    def __init__(self, text):
        self.text = text
        self.compiled = compile_filter(text, Layer.NETWORK)
        self.tree = self.compiled.tree
        self.calls = 0

    def match(self, raw, address):
        self.calls += 1
        return self.compiled.match(raw, address)


def test_display_index_is_incremental_and_decides_plain_rows_from_columns():
    store = CaptureStore()
    index_filter = CountingFilter("tcp and tcp.DstPort == 80 or udp.DstPort == 53")
    index = DisplayIndex(store, index_filter)
    batch = [tcp4(dport=80), tcp4(dport=81), udp_packet(A4, B4, 1, 53, b"q"), udp_packet(A4, B4, 1, 54, b"q")]
    store.append_batch(batch, [Address()] * 4, Verdict.PASSED, 0)
    assert index.update() == 2
    store.append_batch(batch, [Address()] * 4, Verdict.PASSED, 0)
    assert index.update() == 2
    assert index.update() == 0
    assert index.rows.tolist() == [0, 2, 4, 6]
    assert index_filter.calls == 0, "plain rows under a column-decidable filter need no match()"
    header_filter = CountingFilter("ip.SrcAddr == 10.0.0.2 and tcp.Payload[0] == 0x47 or ipv6.HopLimit < 64")
    header_index = DisplayIndex(store, header_filter)
    traffic = demo_packets(1500)
    store.append_batch([p[0] for p in traffic], [p[1] for p in traffic], Verdict.PASSED, 0)
    assert header_index.update() > 0 and header_filter.calls == 0, "header fields of plain rows are gathered"
    index_filter.calls = 0
    index.update()
    store.append(ip_packet(A4, B4, 6, b"\x00\x01"), Address(), Verdict.PASSED, 0)   # truncated TCP
    index.update()
    assert index_filter.calls == 1
    store.clear()
    store.append(tcp4(dport=80), Address(), Verdict.PASSED, 0)
    assert index.update() == 1 and index.rows.tolist() == [0]


def test_display_index_follows_edits_of_rows_already_indexed():
    store = CaptureStore()
    store.append_batch([tcp4(dport=80), tcp4(dport=81), tcp4(dport=80)], [Address()] * 3, Verdict.HELD, 0)
    index = DisplayIndex(store, "tcp.DstPort == 80")
    index.update()
    assert index.rows.tolist() == [0, 2]
    store.set_edited(0, tcp4(dport=8080))
    store.set_edited(1, tcp4(dport=80))
    assert index.update() == 0 and index.rows.tolist() == [0, 2], "update() only appends"
    assert index.recheck_edits()
    assert index.rows.tolist() == [1, 2] and len(index) == 2
    assert not index.recheck_edits()


def test_empty_display_filter_shows_everything_and_bad_filters_raise():
    store = CaptureStore()
    store.append_batch([tcp4()] * 3, [Address()] * 3, Verdict.PASSED, 0)
    index = DisplayIndex(store, "  ")
    index.update()
    assert index.rows.tolist() == [0, 1, 2]
    with pytest.raises(ValueError) as error:
        DisplayIndex(store, "tcp and and")
    assert getattr(error.value, "position", None) is not None


def test_display_rows_are_sorted_numpy_indexes():
    store, _ = _generated_store(seed=3, count=500)
    index = DisplayIndex(store, "tcp or udp")
    index.update()
    rows = index.rows
    assert rows.dtype == np.int64 and np.all(np.diff(rows) > 0)


def test_vectorised_and_one_by_one_appends_give_the_same_columns():
    rng = random.Random(7)
    raws = []
    for _ in range(600):
        raw = packet_gen.packet(rng)
        raws.append(packet_gen.mangle(rng, raw) if rng.random() < 0.2 else raw)
    addresses = [packet_gen.address_for(rng, raw) for raw in raws]
    batched, single = CaptureStore(), CaptureStore()
    batched.append_batch(raws, addresses, Verdict.PASSED, 1)
    for raw, address in zip(raws, addresses):
        single.append(raw, address, Verdict.PASSED, 1)
    assert len(raws) >= VECTOR_ROWS
    for name in RECORD.names:
        if name == "offset":
            continue
        assert np.array_equal(batched.column(name), single.column(name)), name
    for row, raw in enumerate(raws):
        assert batched.raw(row) == raw
