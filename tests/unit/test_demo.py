"""The demo network: real packet bytes, and the consequences of verdicts, edits and injections."""

from __future__ import annotations

import collections
import struct

import dpkt
import pytest

from divertgui.engine.address import Address, Flag, Layer, Param
from divertgui.engine.backends.demo import DemoBackend, echo_packet, parse_segment
from divertgui.engine.checksum import calc_checksums
from divertgui.engine.filter import compile_filter


class Clock:
    """Simulated monotonic time: sleeping advances it, so the tests never wait."""

    def __init__(self) -> None:
        self.ns = 10_000_000_000

    def __call__(self) -> int:
        return self.ns

    def sleep(self, seconds: float) -> None:
        self.ns += max(int(seconds * 1e9), 1_000)

    def advance(self, seconds: float) -> None:
        self.ns += int(seconds * 1e9)


def demo(filter_text="true", flags=Flag(0), rate=2000.0, seed=1, layer=Layer.NETWORK, params=None):
    clock = Clock()
    backend = DemoBackend(seed=seed, rate=rate, clock=clock, sleep=clock.sleep)
    backend.open(compile_filter(filter_text, layer), layer, 0, flags, params or {})
    return backend, clock


def run(backend, clock, seconds, decide=None):
    """Read for `seconds` of simulated time; `decide(captured)` returns the bytes to send or None to drop."""
    seen = []
    end = clock.ns + int(seconds * 1e9)
    while clock.ns < end:
        for captured in backend.recv_batch(255, 0.01):
            seen.append(captured)
            if captured.ticket:
                backend.verdict(captured.ticket, captured.raw if decide is None else decide(captured))
    return seen


def decoded(raw):
    return (dpkt.ip.IP if raw[0] >> 4 == 4 else dpkt.ip6.IP6)(raw)


def kind(raw):
    ip = decoded(raw)
    data = ip.data
    if isinstance(data, dpkt.tcp.TCP):
        return {80: "http", 8080: "http", 443: "tls"}.get(min(data.sport, data.dport), "tcp")
    if isinstance(data, dpkt.udp.UDP):
        return {53: "dns", 443: "quic"}.get(min(data.sport, data.dport), "udp")
    if isinstance(data, dpkt.icmp.ICMP):
        return "icmp"
    if isinstance(data, dpkt.icmp6.ICMP6):
        return "icmpv6"
    return "other"


def test_traffic_is_mixed_realistic_and_checksummed():
    backend, clock = demo(rate=3000)
    seen = run(backend, clock, 3.0)
    kinds = collections.Counter(kind(c.raw) for c in seen)
    assert {"http", "tls", "dns", "quic", "icmp", "icmpv6"} <= set(kinds), kinds
    assert {c.raw[0] >> 4 for c in seen} == {4, 6}
    assert any(c.address.loopback and c.address.outbound for c in seen)
    assert any(c.address.outbound for c in seen) and any(not c.address.outbound for c in seen)
    for c in seen[:3000]:
        fixed = bytearray(c.raw)
        calc_checksums(fixed, c.address.copy())
        assert bytes(fixed) == c.raw, f"bad checksum in {c.raw.hex()}"
        assert c.address.ipv6 == (c.raw[0] >> 4 == 6)
    dns = [decoded(c.raw).data for c in seen if kind(c.raw) == "dns"]
    answers = [dpkt.dns.DNS(u.data) for u in dns if u.sport == 53]
    assert answers and all(a.an for a in answers)
    flags = collections.Counter(decoded(c.raw).data.flags for c in seen if kind(c.raw) in ("http", "tls"))
    assert flags[dpkt.tcp.TH_SYN] and flags[dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK] and any(
        f & dpkt.tcp.TH_FIN for f in flags)
    assert backend.stats().get("retransmitted", 0) == 0, "nothing was lost, so nothing is retransmitted"


def test_rate_is_close_to_what_was_asked():
    for rate in (500, 5000):
        backend, clock = demo(rate=rate, seed=rate)
        count = len(run(backend, clock, 4.0))
        assert 0.75 * rate * 4 <= count <= 1.25 * rate * 4, (rate, count)
    with pytest.raises(ValueError, match="between 0 and 50000"):
        DemoBackend(rate=60_000)


def test_same_seed_same_packets_other_seed_other_packets():
    first = [c.raw for c in run(*demo(seed=7), 1.0)]
    again = [c.raw for c in run(*demo(seed=7), 1.0)]
    other = [c.raw for c in run(*demo(seed=8), 1.0)]
    assert first and first == again
    assert first != other


def test_only_matching_packets_are_diverted_and_the_rest_still_flow():
    backend, clock = demo("udp and (udp.DstPort == 53 or udp.SrcPort == 53)", rate=3000)
    seen = run(backend, clock, 2.0)
    assert seen and all(kind(c.raw) == "dns" for c in seen)
    stats = backend.stats()
    assert stats["generated"] > 3 * stats["diverted"]
    assert stats["echo_replies"] > 0, "undiverted pings are still answered"


def dns_id(raw):
    return struct.unpack_from("!H", decoded(raw).data.data)[0]


def test_a_dropped_query_gets_no_answer_and_is_asked_again():
    backend, clock = demo("udp.DstPort == 53 or udp.SrcPort == 53", rate=300)
    dropped = {}

    def decide(c):
        query = decoded(c.raw).data.dport == 53
        if query and not dropped:
            dropped[dns_id(c.raw)] = c.raw
            return None
        return c.raw

    seen = run(backend, clock, 3.0, decide)
    (ident, raw), = dropped.items()
    queries = [c.raw for c in seen if decoded(c.raw).data.dport == 53 and dns_id(c.raw) == ident]
    answers = [c.raw for c in seen if decoded(c.raw).data.sport == 53 and dns_id(c.raw) == ident]
    assert queries[0] == raw and len(queries) == 2, "the resolver's client retries after a second"
    assert queries[1][-30:] == raw[-30:]
    assert len(answers) == 1, "only the retry is answered"
    assert backend.stats()["dropped"] == 1


def test_a_dropped_tcp_segment_is_retransmitted_and_the_connection_completes():
    backend, clock = demo("tcp.SrcPort == 80", rate=200, seed=3)
    dropped = []

    def decide(c):
        tcp = decoded(c.raw).data
        if tcp.data and not dropped:
            dropped.append((tcp.sport, tcp.dport, tcp.seq, bytes(tcp.data)))
            return None
        return c.raw

    seen = run(backend, clock, 3.0, decide)
    sport, dport, seq, data = dropped[0]
    flow = [decoded(c.raw).data for c in seen if decoded(c.raw).data.dport == dport]
    again = [t for t in flow if t.seq == seq and bytes(t.data) == data]
    assert len(again) >= 2, "the dropped segment is sent again"
    assert any(t.flags & dpkt.tcp.TH_FIN for t in flow), "the server goes on to close the connection"
    assert backend.stats()["retransmitted"] >= 1


@pytest.mark.parametrize("lost", ["SYN", "SYN-ACK"])
def test_a_lost_handshake_packet_is_sent_again_and_the_connection_completes(lost):
    backend, clock = demo("tcp", rate=100, seed=4)
    dropped = []

    def decide(c):
        tcp = decoded(c.raw).data
        is_ack = bool(tcp.flags & dpkt.tcp.TH_ACK)
        if not dropped and is_ack == (lost == "SYN-ACK"):
            dropped.append((tcp.sport, tcp.dport))
            return None
        return c.raw

    seen = run(backend, clock, 2.0, decide)
    flow = set(dropped[0])
    handshake = [decoded(c.raw).data for c in seen
                 if {decoded(c.raw).data.sport, decoded(c.raw).data.dport} == flow]
    kinds = [t.flags & (dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK) for t in handshake]
    wanted = dpkt.tcp.TH_SYN | (dpkt.tcp.TH_ACK if lost == "SYN-ACK" else 0)
    assert kinds.count(wanted) >= 2, kinds
    assert any(t.flags & dpkt.tcp.TH_FIN for t in handshake), "the connection went on to its end"
    assert backend.stats()["retransmitted"] >= 1
    assert backend.stats().get("tcp_gave_up", 0) == 0


def held_ping(backend, clock):
    for _ in range(1000):
        for c in backend.recv_batch(255, 0.01):
            if c.raw[0] >> 4 == 4 and c.raw[9] == 1 and c.raw[20] == 8:
                return c
            backend.verdict(c.ticket, c.raw)
    raise AssertionError("no echo request within 10 simulated seconds")


def replies_to(backend, clock, ident, seq):
    seen = run(backend, clock, 0.5)
    return [c.raw for c in seen if c.raw[9] == 1 and c.raw[20] == 0
            and struct.unpack_from("!HH", c.raw, 24) == (ident, seq)]


def test_an_edited_echo_request_is_what_the_peer_answers():
    backend, clock = demo("icmp", rate=400)
    request = held_ping(backend, clock)
    ident, seq = struct.unpack_from("!HH", request.raw, 24)
    edited = bytearray(request.raw)
    edited[28:36] = b"EDITED!!"
    calc_checksums(edited, request.address.copy())
    backend.verdict(request.ticket, bytes(edited))
    assert bytes(edited) in backend.received
    replies = replies_to(backend, clock, ident, seq)
    assert len(replies) == 1 and replies[0][28:36] == b"EDITED!!"


def test_an_edit_with_a_bad_checksum_is_discarded_by_the_peer():
    backend, clock = demo("icmp", rate=400)
    request = held_ping(backend, clock)
    ident, seq = struct.unpack_from("!HH", request.raw, 24)
    edited = bytearray(request.raw)
    edited[30] ^= 0xFF
    backend.verdict(request.ticket, bytes(edited))
    assert replies_to(backend, clock, ident, seq) == []
    assert backend.stats()["discarded"] == 1


def test_an_injected_echo_request_is_answered():
    backend, clock = demo("icmp", rate=0)
    this, web = bytes((10, 0, 0, 2)), bytes((198, 51, 100, 10))
    backend.inject(echo_packet(this, web, False, 4242, 9, b"injected"), Address(outbound=True))
    replies = replies_to(backend, clock, 4242, 9)
    assert len(replies) == 1 and replies[0].endswith(b"injected")
    assert backend.stats()["injected"] == 1


def test_sniff_gives_copies_and_the_network_goes_on():
    backend, clock = demo("udp", flags=Flag.SNIFF, rate=1000)
    seen = run(backend, clock, 2.0)
    assert seen and all(c.ticket == 0 and c.address.sniffed for c in seen)
    answers = [c for c in seen if kind(c.raw) == "dns" and decoded(c.raw).data.sport == 53]
    assert answers, "sniffed queries still reach the resolver"


def test_drop_mode_drops_matching_packets_and_nothing_is_read():
    backend, clock = demo("udp.DstPort == 53", flags=Flag.DROP, rate=1000)
    assert run(backend, clock, 4.0) == []
    stats = backend.stats()
    assert stats["dropped"] > 0 and stats.get("udp_gave_up", 0) > 0


def test_unread_packets_overflow_and_expire_and_are_counted():
    backend, clock = demo(rate=20_000, params={Param.QUEUE_LENGTH: 64, Param.QUEUE_TIME: 100})
    for _ in range(30):           # 10 ms between reads brings more packets than the queue holds
        clock.advance(0.01)
        for captured in backend.recv_batch(255, 0):
            backend.verdict(captured.ticket, captured.raw)
    assert backend.stats()["overflowed"] > 0
    for _ in range(3):            # what is left waits longer than QUEUE_TIME
        clock.advance(0.3)
        backend.recv_batch(1, 0)
    assert backend.stats()["expired"] > 0
    with pytest.raises(KeyError, match="no packet waits for a verdict under ticket 1"):
        backend.verdict(1, None)


def test_close_releases_pending_packets_and_forward_layer_has_no_loopback():
    backend, clock = demo(rate=1000, layer=Layer.NETWORK_FORWARD)
    seen = run(backend, clock, 1.0, decide=lambda c: c.raw)
    assert seen and not any(c.address.loopback or c.address.outbound for c in seen)
    assert all(c.address.layer == Layer.NETWORK_FORWARD for c in seen)
    pending = backend.recv_batch(255, 0.05)
    backend.close()
    assert backend.stats()["pending"] == 0
    assert all(c.raw in backend.received for c in pending)


def test_parse_segment_rejects_what_a_stack_would_discard():
    raw = echo_packet(bytes((10, 0, 0, 2)), bytes((10, 0, 0, 1)), False, 1, 1, b"abc")
    assert parse_segment(raw).payload == b"abc"
    assert parse_segment(raw[:-1]) is None
    assert parse_segment(b"\x45" + raw[1:10] + b"\0\0" + raw[12:]) is None
    assert parse_segment(b"") is None
