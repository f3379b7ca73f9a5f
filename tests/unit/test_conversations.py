"""Conversations and endpoints from the store's arrays, against a packet-by-packet
count, and the filters they hand to the display filter bar."""

import collections
import ipaddress
import random

import numpy as np
import pytest

from divertgui.engine.address import Address, Layer
from divertgui.engine.backends.demo_packets import ACK, PSH, SYN, echo_packet, tcp_packet, udp_packet
from divertgui.engine.conversations import conversations, endpoints
from divertgui.engine.display_index import DisplayIndex
from divertgui.engine.filter import compile_filter
from divertgui.engine.headers import parse_headers
from divertgui.engine.store import CaptureStore
from divertgui.engine.store_record import Verdict
from tests import packet_gen


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


A4, B4, C4 = ip("192.0.2.1"), ip("198.51.100.2"), ip("203.0.113.3")
A6, B6 = ip("2001:db8::1"), ip("2001:db8:1::2")


def crafted() -> list[bytes]:
    return [
        udp_packet(A4, B4, 5353, 53, b"query"),                     # 0: DNS, A sends first
        tcp_packet(B4, A4, 80, 40000, 7, 0, SYN),                   # 1: B opens a TCP connection to A
        udp_packet(B4, A4, 53, 5353, b"answer-longer"),             # 2
        tcp_packet(A4, B4, 40000, 80, 9, 8, SYN | ACK),             # 3
        tcp_packet(B4, A4, 80, 40000, 8, 10, ACK | PSH, b"data"),   # 4
        echo_packet(A4, C4, False, 1, 1, b"ping"),                  # 5
        echo_packet(C4, A4, True, 1, 1, b"ping"),                   # 6
        tcp_packet(A6, B6, 1234, 443, 1, 0, SYN),                   # 7
        tcp_packet(B6, A6, 443, 1234, 1, 2, SYN | ACK),             # 8
        b"\x45\x00\x00",                                            # 9: not IP
        udp_packet(A4, B4, 5353, 53, b"again"),                     # 10
    ]


def capture(packets, batch: bool = False) -> CaptureStore:
    store = CaptureStore()
    addresses = [Address(timestamp=1_000_000_000 + 250_000_000 * i, ipv6=bool(raw) and raw[0] >> 4 == 6)
                 for i, raw in enumerate(packets)]
    if batch:
        store.append_batch(packets, addresses, Verdict.PASSED, 0)
    else:
        for raw, address in zip(packets, addresses):
            store.append(raw, address, Verdict.PASSED, 0)
    return store


def entries(table) -> dict:
    """Conversations by (protocol, A, port A, B, port B)."""
    return {(int(table.protocol[i]), table.address_a(i), int(table.port_a[i]), table.address_b(i),
             int(table.port_b[i])): i for i in range(len(table))}


def test_conversations_count_both_directions_with_a_as_the_first_sender():
    packets = crafted()
    table = conversations(capture(packets))
    found = entries(table)
    assert set(found) == {
        (17, "192.0.2.1", 5353, "198.51.100.2", 53),
        (6, "198.51.100.2", 80, "192.0.2.1", 40000),
        (1, "192.0.2.1", 0, "203.0.113.3", 0),
        (6, "2001:db8::1", 1234, "2001:db8:1::2", 443),
    }
    dns = found[(17, "192.0.2.1", 5353, "198.51.100.2", 53)]
    assert table.packets[dns] == 3
    assert (table.packets_a_to_b[dns], table.packets_b_to_a[dns]) == (2, 1)
    assert table.bytes_a_to_b[dns] == len(packets[0]) + len(packets[10])
    assert table.bytes_b_to_a[dns] == len(packets[2])
    assert table.bytes[dns] == table.bytes_a_to_b[dns] + table.bytes_b_to_a[dns]
    assert table.start[dns] == pytest.approx(0.0)
    assert table.duration[dns] == pytest.approx(2.5)
    assert table.first_row[dns] == 0
    web = found[(6, "198.51.100.2", 80, "192.0.2.1", 40000)]
    assert (table.packets_a_to_b[web], table.packets_b_to_a[web]) == (2, 1)
    assert table.start[web] == pytest.approx(0.25)
    assert table.duration[web] == pytest.approx(0.75)
    assert table.skipped == 1
    assert not table.has_ports(found[(1, "192.0.2.1", 0, "203.0.113.3", 0)])


def test_endpoints_count_what_each_address_sent_and_received():
    packets = crafted()
    table = endpoints(capture(packets))
    by_address = {table.address(i): i for i in range(len(table))}
    assert set(by_address) == {"192.0.2.1", "198.51.100.2", "203.0.113.3", "2001:db8::1", "2001:db8:1::2"}
    a = by_address["192.0.2.1"]
    sent = [0, 3, 5, 10]
    received = [1, 2, 4, 6]
    assert (table.tx_packets[a], table.rx_packets[a]) == (4, 4)
    assert table.tx_bytes[a] == sum(len(packets[i]) for i in sent)
    assert table.rx_bytes[a] == sum(len(packets[i]) for i in received)
    assert table.packets[a] == 8 and table.bytes[a] == table.tx_bytes[a] + table.rx_bytes[a]
    assert table.skipped == 1


def flow_key(raw: bytes):
    """(version, protocol, unordered ends) of a packet, or None when it is not IP."""
    layout = parse_headers(raw)
    if layout is None:
        return None
    src, dst = (raw[12:16], raw[16:20]) if layout.version == 4 else (raw[8:24], raw[24:40])
    sport = dport = 0
    if layout.transport in (6, 17):
        at = layout.transport_offset
        sport, dport = int.from_bytes(raw[at:at + 2], "big"), int.from_bytes(raw[at + 2:at + 4], "big")
    return layout.version, layout.protocol, frozenset({(src, sport), (dst, dport)}), src, dst


def reference_counts(packets, rows):
    """Per conversation: packets and bytes; per address: tx and rx bytes; counted one by one."""
    talks, ends = collections.Counter(), collections.Counter()
    for row in rows:
        raw = packets[row]
        key = flow_key(raw)
        if key is None:
            continue
        version, protocol, pair, src, dst = key
        talks[(version, protocol, pair), "packets"] += 1
        talks[(version, protocol, pair), "bytes"] += len(raw)
        ends[version, src, "tx"] += len(raw)
        ends[version, dst, "rx"] += len(raw)
    return talks, ends


def computed_counts(store, rows):
    table = conversations(store, rows)
    talks = collections.Counter()
    for i in range(len(table)):
        a = ipaddress.ip_address(table.address_a(i)).packed
        b = ipaddress.ip_address(table.address_b(i)).packed
        key = (int(table.version[i]), int(table.protocol[i]),
               frozenset({(a, int(table.port_a[i])), (b, int(table.port_b[i]))}))
        talks[key, "packets"] += int(table.packets[i])
        talks[key, "bytes"] += int(table.bytes[i])
    points = endpoints(store, rows)
    ends = collections.Counter()
    for i in range(len(points)):
        address = ipaddress.ip_address(points.address(i)).packed
        ends[int(points.version[i]), address, "tx"] += int(points.tx_bytes[i])
        ends[int(points.version[i]), address, "rx"] += int(points.rx_bytes[i])
    return +talks, +ends


@pytest.mark.parametrize("seed", [1, 2])
def test_the_arrays_agree_with_a_packet_by_packet_count_on_generated_packets(seed):
    rng = random.Random(seed)
    # Options, extension headers, fragments, truncated and corrupt packets among plain ones,
    # stored through the vectorised and the one-by-one append paths.
    packets = [packet_gen.packet(rng) for _ in range(1500)]
    for batch in (True, False):
        store = capture(packets, batch)
        store.set_edited(3, udp_packet(A4, B4, 1, 2, b"edited"))
        current = [store.raw(row) for row in range(len(store))]
        everything = np.arange(len(store))
        some = np.array(sorted(rng.sample(range(len(store)), 400)))
        for rows in (None, some):
            expected = reference_counts(current, everything if rows is None else some)
            assert computed_counts(store, rows) == tuple(+c for c in expected)


def test_counting_the_rows_of_a_display_filter():
    store = capture(crafted())
    shown = DisplayIndex(store, "udp or icmp")
    shown.update()
    table = conversations(store, shown.rows)
    assert sorted(int(p) for p in table.protocol) == [1, 17]
    assert sorted(int(n) for n in table.packets) == [2, 3]
    assert table.skipped == 0
    assert len(conversations(store, np.zeros(0, np.int64))) == 0


def matching_rows(store, text):
    compiled = compile_filter(text, Layer.NETWORK)
    return [row for row in range(len(store)) if compiled.match(store.raw(row), store.address(row))]


def test_each_conversation_filter_selects_exactly_its_rows():
    rng = random.Random(5)
    packets = crafted() + [packet_gen.packet(rng) for _ in range(200)]
    store = capture(packets)
    table = conversations(store)
    keys = [flow_key(raw) and flow_key(raw)[:3] for raw in packets]
    parsable = matching_rows(store, "ip or ipv6")
    followed = [i for i in range(len(table)) if table.first_row[i] < len(crafted())]
    assert len(followed) == 4
    for i in followed:
        rows = [row for row, key in enumerate(keys) if key == keys[int(table.first_row[i])]]
        assert matching_rows(store, table.filter(i)) == rows, table.filter(i)
        there = matching_rows(store, table.filter(i, "a_to_b"))
        back = matching_rows(store, table.filter(i, "b_to_a"))
        assert sorted(there + back) == rows and int(table.first_row[i]) in there
        assert len(there) == table.packets_a_to_b[i]
        assert matching_rows(store, table.excluding_filter(i)) == [r for r in parsable if r not in rows]
    with pytest.raises(ValueError, match="direction"):
        table.filter(0, "sideways")


def test_each_endpoint_filter_selects_the_rows_it_counts():
    packets = crafted() + [udp_packet(A4, A4, 9, 9, b"to itself")]
    store = capture(packets)
    table = endpoints(store)
    for i in range(len(table)):
        address = ipaddress.ip_address(table.address(i)).packed
        rows = [row for row, key in enumerate(map(flow_key, packets)) if key and address in key[3:]]
        assert matching_rows(store, table.filter(i)) == rows
        assert table.packets[i] == len(rows)
