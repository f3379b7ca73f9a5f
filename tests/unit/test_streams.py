"""Following TCP and UDP streams: reassembly in sequence order, both IP
versions, and the filter that selects exactly the stream's packets."""

import ipaddress
import random

import numpy as np
import pytest

from divertgui.engine.address import Address, Layer
from divertgui.engine.backends.demo_packets import ACK, FIN, PSH, SYN, echo_packet, tcp_packet, udp_packet
from divertgui.engine.filter import compile_filter
from divertgui.engine.store import CaptureStore
from divertgui.engine.store_record import Verdict
from divertgui.engine.streams import Direction, StreamError, StreamSegment, follow_stream
from tests import packet_gen

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def capture(packets, outbound_from: bytes | None = None) -> CaptureStore:
    store = CaptureStore()
    for i, raw in enumerate(packets):
        version = raw[0] >> 4 if raw else 0
        source = raw[12:16] if version == 4 else raw[8:24]
        address = Address(outbound=source == outbound_from, ipv6=version == 6, timestamp=1000 * i)
        store.append(raw, address, Verdict.PASSED, 0)
    return store


class Connection:
    """Both ends of a TCP connection as packet builders; seq counts from each side's ISN."""

    def __init__(self, client: str, cport: int, server: str, sport: int, isn=(1000, 9000)):
        self.c, self.s, self.cport, self.sport = ip(client), ip(server), cport, sport
        self.isn = isn

    def client(self, offset: int, payload: bytes = b"", flags: int = ACK | PSH) -> bytes:
        return tcp_packet(self.c, self.s, self.cport, self.sport, self.isn[0] + offset, self.isn[1], flags, payload)

    def server(self, offset: int, payload: bytes = b"", flags: int = ACK | PSH) -> bytes:
        return tcp_packet(self.s, self.c, self.sport, self.cport, self.isn[1] + offset, self.isn[0], flags, payload)

    def handshake(self) -> list[bytes]:
        return [self.client(0, flags=SYN), self.server(0, flags=SYN | ACK), self.client(1, flags=ACK)]


def test_http_exchange_in_order_with_the_client_found_by_its_syn():
    conn = Connection("192.0.2.10", 40000, "198.51.100.7", 80)
    request, response = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\nhello"
    store = capture([*conn.handshake(), conn.client(1, request), conn.server(1, response),
                     conn.client(1 + len(request), flags=FIN | ACK)])
    # Following from the server's packet finds the same stream, client first.
    stream = follow_stream(store, 4)
    assert (stream.client, stream.server) == (("192.0.2.10", 40000), ("198.51.100.7", 80))
    assert stream.segments == [StreamSegment(C2S, 3, request), StreamSegment(S2C, 4, response)]
    assert stream.rows.tolist() == [0, 1, 2, 3, 4, 5]
    assert stream.duplicate_bytes == 0
    assert stream.describe() == "TCP 192.0.2.10:40000 ↔ 198.51.100.7:80"


def test_out_of_order_retransmitted_and_overlapping_segments_are_put_in_sequence():
    conn = Connection("192.0.2.10", 40001, "198.51.100.7", 80)
    data = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    packets = [
        *conn.handshake(),
        conn.client(11, data[10:20]),          # 3: arrives before the bytes it follows
        conn.client(1, data[0:10]),            # 4: fills the hole
        conn.client(1, data[0:10]),            # 5: retransmission
        conn.client(6, data[5:15]),            # 6: overlaps both
        conn.client(16, data[15:26]),          # 7: overlaps the tail, brings new bytes
        conn.server(1, b"ok"),                 # 8
    ]
    stream = follow_stream(capture(packets), 0)
    assert stream.data(C2S) == data
    assert stream.data(S2C) == b"ok"
    assert stream.missing(C2S) == 0
    assert stream.duplicate_bytes == 10 + 10 + 5
    client_rows = [s.row for s in stream.segments if s.direction == C2S]
    # Bytes sent twice are taken from the segment lowest in sequence, so row 6 brings K-O.
    assert client_rows == [4, 6, 3, 7]
    # The server's reply comes after every client byte that was complete before it.
    assert [s.direction for s in stream.segments] == [C2S, C2S, C2S, C2S, S2C]


def test_gaps_are_marked_with_the_number_of_missing_bytes():
    conn = Connection("192.0.2.10", 40002, "198.51.100.7", 8080)
    packets = [*conn.handshake(), conn.client(1, b"first"), conn.client(1 + 5 + 7, b"after-gap"),
               conn.server(101, b"late")]
    stream = follow_stream(capture(packets), 3)
    client = [s for s in stream.segments if s.direction == C2S]
    assert client == [StreamSegment(C2S, 3, b"first"), StreamSegment(C2S, 4, b"", 7),
                      StreamSegment(C2S, 4, b"after-gap")]
    assert stream.missing(C2S) == 7
    assert stream.missing(S2C) == 100
    assert stream.data(S2C) == b"late"


def test_a_stream_caught_mid_flight_across_sequence_wraparound():
    # No SYN: the client sent the first packet seen; sequence numbers wrap past 2**32.
    conn = Connection("192.0.2.20", 50000, "198.51.100.9", 443, isn=((1 << 32) - 6, 77))
    packets = [conn.client(5, b"wxyz"), conn.client(1, b"stuv"), conn.server(0, b"reply"), conn.client(9, b"!")]
    stream = follow_stream(capture(packets), 2)
    assert stream.client == ("192.0.2.20", 50000)
    assert stream.data(C2S) == b"stuvwxyz!"
    assert stream.data(S2C) == b"reply"


def test_ipv6_tcp_stream():
    conn = Connection("2001:db8::10", 41000, "2001:db8:1::80", 80)
    packets = [*conn.handshake(), conn.server(1, b"banner\r\n"), conn.client(1, b"hi"), conn.server(9, b"bye")]
    stream = follow_stream(capture(packets), 4)
    assert stream.version == 6
    assert stream.client == ("2001:db8::10", 41000)
    assert [(s.direction, s.data) for s in stream.segments] == [(S2C, b"banner\r\n"), (C2S, b"hi"), (S2C, b"bye")]
    assert stream.describe(S2C) == "TCP [2001:db8:1::80]:80 → [2001:db8::10]:41000"


@pytest.mark.parametrize("client, server", [("192.0.2.1", "192.0.2.53"), ("2001:db8::1", "2001:db8::53")])
def test_udp_datagrams_keep_their_arrival_order(client, server):
    c, s = ip(client), ip(server)
    packets = [udp_packet(c, s, 5353, 53, b"q1"), udp_packet(s, c, 53, 5353, b"a1"),
               udp_packet(c, s, 5353, 53, b"q1"), udp_packet(c, s, 5353, 53, b""),
               udp_packet(c, s, 5353, 54, b"other port")]
    stream = follow_stream(capture(packets), 1)
    assert stream.protocol_name == "UDP"
    assert stream.client == (client, 5353)
    assert stream.segments == [StreamSegment(C2S, 0, b"q1"), StreamSegment(S2C, 1, b"a1"),
                               StreamSegment(C2S, 2, b"q1")]
    assert stream.rows.tolist() == [0, 1, 2, 3]


def test_packets_without_a_stream_say_so():
    store = capture([echo_packet(ip("192.0.2.1"), ip("192.0.2.2"), False, 1, 1, b"ping"), b"\x45\x00garbage"])
    with pytest.raises(StreamError, match="packet 1 is not a TCP or UDP packet"):
        follow_stream(store, 0)
    with pytest.raises(StreamError, match="packet 2 is not a TCP or UDP packet"):
        follow_stream(store, 1)
    with pytest.raises(StreamError, match="packet 3 is not in the capture"):
        follow_stream(store, 2)


def mixed_capture(seed: int = 7):
    """Two followed conversations among look-alikes (same addresses, swapped or other ports,
    the other transport, the other IP version) and generated noise, malformed packets included."""
    rng = random.Random(seed)
    v4 = Connection("192.0.2.10", 40000, "198.51.100.7", 80)
    v6 = Connection("2001:db8::10", 40000, "2001:db8:1::80", 80)
    look_alikes = [
        Connection("192.0.2.10", 40001, "198.51.100.7", 80).client(1, b"x"),
        Connection("192.0.2.10", 80, "198.51.100.7", 40000).client(1, b"x"),
        Connection("198.51.100.7", 40000, "192.0.2.10", 80).client(1, b"x"),
        Connection("192.0.2.11", 40000, "198.51.100.7", 80).client(1, b"x"),
        udp_packet(ip("192.0.2.10"), ip("198.51.100.7"), 40000, 80, b"udp"),
        Connection("::ffff:192.0.2.10", 40000, "::ffff:198.51.100.7", 80).client(1, b"mapped"),
        Connection("2001:db8::10", 40000, "2001:db8:1::80", 81).server(1, b"x"),
    ]
    followed = [*v4.handshake(), *v6.handshake(), v4.client(1, b"GET"), v6.server(1, b"OK"),
                v4.server(1, b"200"), v6.client(1, b"ack")]
    packets = followed + look_alikes + [packet_gen.packet(rng) for _ in range(300)]
    rng.shuffle(packets)
    requests = {"192.0.2.10": packets.index(v4.client(1, b"GET")), "2001:db8::10": packets.index(v6.client(1, b"ack"))}
    return capture(packets, outbound_from=ip("192.0.2.10")), packets, requests


def matching_rows(store: CaptureStore, text: str) -> list[int]:
    compiled = compile_filter(text, Layer.NETWORK)
    return [row for row in range(len(store)) if compiled.match(store.raw(row), store.address(row))]


def parsable_rows(store: CaptureStore) -> list[int]:
    return matching_rows(store, "ip or ipv6")


@pytest.mark.parametrize("client", ["192.0.2.10", "2001:db8::10"])
def test_the_stream_filter_selects_exactly_the_streams_packets(client):
    store, packets, requests = mixed_capture()
    source = ip(client)
    stream = follow_stream(store, requests[client])
    rows = stream.rows.tolist()
    assert len(rows) == 5
    assert matching_rows(store, stream.filter_text()) == rows
    one_way = matching_rows(store, stream.filter_text(C2S))
    other_way = matching_rows(store, stream.filter_text(S2C))
    assert sorted(one_way + other_way) == rows and len(one_way) == 3
    assert all(packets[r][12:16] == source or packets[r][8:24] == source for r in one_way)
    # Filtering the stream out keeps every other packet the language can read.
    kept = matching_rows(store, stream.excluding_filter_text())
    assert kept == [r for r in parsable_rows(store) if r not in rows]


def test_the_stream_filter_speaks_the_reference_language(reference):
    store, _, requests = mixed_capture(seed=11)
    for row in requests.values():
        stream = follow_stream(store, row)
        for text in (stream.filter_text(), stream.excluding_filter_text()):
            expected = matching_rows(store, text)
            found = [row for row in range(len(store)) if reference.eval(text, store.raw(row), store.address(row))]
            assert found == expected, text


def test_the_stream_follows_edits_of_its_packets():
    conn = Connection("192.0.2.10", 40000, "198.51.100.7", 80)
    store = capture([*conn.handshake(), conn.client(1, b"GET /a"), conn.server(1, b"200")])
    store.set_edited(3, conn.client(1, b"GET /b"))
    assert follow_stream(store, 0).data(C2S) == b"GET /b"
    np.testing.assert_array_equal(follow_stream(store, 4).rows, np.arange(5))


def test_ports_reused_by_a_new_connection_start_a_new_stream():
    old = Connection("192.0.2.10", 40000, "198.51.100.7", 80, isn=(1000, 9000))
    new = Connection("192.0.2.10", 40000, "198.51.100.7", 80, isn=(555_000, 777_000))
    noise = udp_packet(ip("192.0.2.10"), ip("198.51.100.7"), 40000, 80, b"udp")
    packets = [*old.handshake(), old.client(1, b"first"), noise, old.client(0, flags=SYN),
               *new.handshake(), new.client(1, b"second"), new.server(1, b"reply")]
    store = capture(packets)
    first, second = follow_stream(store, 3), follow_stream(store, 9)
    assert first.rows.tolist() == [0, 1, 2, 3, 5] and first.data(C2S) == b"first"
    assert second.rows.tolist() == [6, 7, 8, 9, 10] and second.data(C2S) == b"second"
    assert second.missing(C2S) == 0 and second.data(S2C) == b"reply"
    for stream in (first, second):
        rows = stream.rows.tolist()
        assert matching_rows(store, stream.filter_text()) == rows
        assert matching_rows(store, stream.excluding_filter_text()) == [r for r in range(len(store)) if r not in rows]


def test_a_connection_caught_mid_flight_ends_at_its_fin():
    old = Connection("192.0.2.10", 40000, "198.51.100.7", 80, isn=(1000, 9000))
    new = Connection("192.0.2.10", 40000, "198.51.100.7", 80, isn=(1000, 5000))
    packets = [old.client(50, b"tail"), old.client(54, flags=FIN | ACK), *new.handshake(), new.client(1, b"new")]
    store = capture(packets)
    assert follow_stream(store, 0).rows.tolist() == [0, 1]
    assert follow_stream(store, 5).data(C2S) == b"new"
