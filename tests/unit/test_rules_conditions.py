"""Network-condition rules and the pipeline, driven by a fake clock and seeded randomness."""

import json
import statistics

import dpkt
import pytest

from divertgui.engine.address import Address
from divertgui.engine.packet import Packet
from divertgui.engine.rules import (
    Bandwidth, Drop, Duplicate, Lag, OutOfOrder, Pipeline, Reset, RuleError, Tamper, Throttle,
    list_presets, list_profiles, load_profile, rule_from_dict, rules_from_dicts, save_profile,
)

MS = 1_000_000
A4, B4 = "10.1.0.1", "10.1.0.2"


def _ip4(text):
    return bytes(int(x) for x in text.split("."))


def ip_packet(transport, payload_len_hint=0, src=A4, dst=B4, outbound=True):
    proto = dpkt.ip.IP_PROTO_TCP if isinstance(transport, dpkt.tcp.TCP) else dpkt.ip.IP_PROTO_UDP
    ip = dpkt.ip.IP(src=_ip4(src), dst=_ip4(dst), p=proto, ttl=64, data=transport)
    ip.len = len(ip)
    raw = bytes(ip)
    packet = Packet(raw, Address(outbound=outbound))
    packet.recalculate_checksums()
    return packet


def udp_packet(payload=b"x", outbound=True, sport=4000, dport=5000, src=A4, dst=B4):
    udp = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    udp.ulen = len(udp)
    return ip_packet(udp, src=src, dst=dst, outbound=outbound)


def tcp_packet(payload=b"", seq=1000, ack=5000, flags=dpkt.tcp.TH_ACK, outbound=True,
               sport=40000, dport=80, src=A4, dst=B4):
    tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, data=payload, win=65535)
    return ip_packet(tcp, src=src, dst=dst, outbound=outbound)


def numbered(n, outbound=True):
    return [udp_packet(i.to_bytes(4, "big"), outbound=outbound) for i in range(n)]


def number(packet):
    return int.from_bytes(packet.payload[:4], "big")


def drive(pipeline, packets, step_ns, until_ns=None):
    """Feed one packet per step of the fake clock; then run the clock on until nothing is held.
    Returns [(time sent, packet)]."""
    now, sent = 0, []
    for packet in packets:
        sent += [(now, p) for p in pipeline.due(now)]
        sent += [(now, p) for p in pipeline.process([packet], now)]
        now += step_ns
    end = until_ns if until_ns is not None else now + 60_000 * MS
    while pipeline.next_deadline() is not None and pipeline.next_deadline() <= end:
        now = max(now, pipeline.next_deadline())
        sent += [(now, p) for p in pipeline.due(now)]
    return sent


def assert_conserved(pipeline):
    stats = pipeline.stats()
    assert stats["received"] + stats["created"] == stats["sent"] + stats["dropped"] + stats["held"], stats


# -- lag ----------------------------------------------------------------------------------------


def test_lag_holds_each_packet_for_its_direction_delay():
    pipeline = Pipeline([Lag(inbound_ms=30, outbound_ms=70)])
    out = pipeline.process([udp_packet(b"o", outbound=True), udp_packet(b"i", outbound=False)], 1000)
    assert out == []
    assert pipeline.next_deadline() == 1000 + 30 * MS
    assert pipeline.due(1000 + 30 * MS - 1) == []
    inbound = pipeline.due(1000 + 30 * MS)
    assert [p.payload for p in inbound] == [b"i"]
    assert [p.payload for p in pipeline.due(1000 + 70 * MS)] == [b"o"]
    assert pipeline.next_deadline() is None
    assert pipeline.stats()["rules"][0]["delayed"] == 2
    assert_conserved(pipeline)


def test_zero_lag_passes_at_once():
    pipeline = Pipeline([Lag(inbound_ms=0, outbound_ms=0)])
    packet = udp_packet()
    assert pipeline.process([packet], 5) == [packet]
    assert pipeline.next_deadline() is None


@pytest.mark.parametrize("distribution", ["uniform", "normal"])
def test_lag_jitter_spreads_around_the_delay(distribution):
    pipeline = Pipeline([Lag(outbound_ms=50, jitter_ms=10, distribution=distribution)], seed=3)
    sent = drive(pipeline, numbered(2000), step_ns=0)
    delays = [t / MS for t, _ in sent]
    assert len(delays) == 2000
    assert abs(statistics.median(delays) - 50) < 1.0
    if distribution == "uniform":
        assert 40 <= min(delays) < 41 and 59 < max(delays) <= 60
    else:
        assert 9 < statistics.pstdev(delays) < 11


def test_lag_keep_order_never_reorders():
    pipeline = Pipeline([Lag(outbound_ms=20, jitter_ms=15, keep_order=True)], seed=1)
    sent = drive(pipeline, numbered(300), step_ns=MS)
    assert [number(p) for _, p in sent] == list(range(300))


def test_lag_is_reproducible_with_a_seed():
    def delays(seed):
        pipeline = Pipeline([Lag(outbound_ms=10, jitter_ms=5)], seed=seed)
        return [t for t, _ in drive(pipeline, numbered(50), step_ns=0)]
    assert delays(7) == delays(7)
    assert delays(7) != delays(8)


# -- drop ---------------------------------------------------------------------------------------


def test_drop_loses_its_chance():
    pipeline = Pipeline([Drop(chance=30.0)], seed=2)
    out = pipeline.process(numbered(10000), 0)
    lost = 10000 - len(out)
    assert 2800 < lost < 3200
    assert pipeline.stats()["rules"][0]["dropped"] == lost
    assert_conserved(pipeline)


def test_gilbert_elliott_loses_in_bursts():
    rule = Drop(model="gilbert_elliott", enter_bad=2.0, leave_bad=20.0, loss_good=0.0, loss_bad=100.0)
    pipeline = Pipeline([rule], seed=4)
    kept = {number(p) for p in pipeline.process(numbered(20000), 0)}
    lost = [i not in kept for i in range(20000)]
    # Stationary loss = enter / (enter + leave) = 2 / 22; mean burst = 1 / leave = 5 packets.
    assert 0.07 < sum(lost) / 20000 < 0.11
    bursts = sum(1 for i in range(1, 20000) if lost[i] and not lost[i - 1])
    assert 4 < sum(lost) / bursts < 6


# -- throttle -----------------------------------------------------------------------------------


def test_throttle_holds_a_frame_and_releases_it_together():
    pipeline = Pipeline([Throttle(frame_ms=30, chance=100.0)])
    sent = drive(pipeline, numbered(10), step_ns=5 * MS)
    # The first packet opens a frame: packets 0..5 (t=0..25 ms) leave together at 30 ms.
    times = [(number(p), t // MS) for t, p in sent]
    assert times[:6] == [(i, 30) for i in range(6)]
    assert [n for n, _ in times] == list(range(10))
    assert pipeline.stats()["rules"][0]["delayed"] == 10


def test_throttle_can_drop_what_it_throttles():
    pipeline = Pipeline([Throttle(frame_ms=30, chance=100.0, drop_throttled=True)])
    assert drive(pipeline, numbered(10), step_ns=5 * MS) == []
    assert pipeline.stats()["rules"][0]["dropped"] == 10
    assert_conserved(pipeline)


def test_throttle_releases_early_when_full():
    pipeline = Pipeline([Throttle(frame_ms=1000, chance=100.0, max_packets=4)])
    out = pipeline.process(numbered(4), 0)
    assert [number(p) for p in out] == [0, 1, 2, 3]


# -- out of order -------------------------------------------------------------------------------


def test_out_of_order_lets_later_packets_overtake():
    pipeline = Pipeline([OutOfOrder(chance=20.0, window=3)], seed=5)
    order = [number(p) for p in pipeline.process(numbered(1000), 0)]
    order += [number(p) for p in pipeline.release_all()]
    assert sorted(order) == list(range(1000))
    overtaken = sum(1 for i in range(1, 1000) if order[i] < order[i - 1])
    assert 100 < overtaken < 300
    # Nothing moves back more than the window allows.
    assert all(order.index(n) - n <= 3 * 10 for n in range(1000))
    rule = pipeline.stats()["rules"][0]
    assert rule["reordered"] == rule["delayed"] > 0


def test_out_of_order_releases_when_traffic_stops():
    pipeline = Pipeline([OutOfOrder(chance=100.0, max_hold_ms=40)])
    assert pipeline.process(numbered(1), 0) == []
    assert pipeline.next_deadline() == 40 * MS
    assert len(pipeline.due(40 * MS)) == 1


# -- duplicate ----------------------------------------------------------------------------------


def test_duplicate_sends_count_copies_with_its_chance():
    pipeline = Pipeline([Duplicate(count=3, chance=50.0)], seed=6)
    originals = numbered(1000)
    out = pipeline.process(originals, 0)
    duplicated = pipeline.stats()["rules"][0]["duplicated"]
    assert len(out) == 1000 + duplicated and duplicated % 2 == 0
    assert 400 < duplicated / 2 < 600
    copies = [p for p in out if not any(p is o for o in originals)]
    assert all(c.ticket == 0 for c in copies)
    assert_conserved(pipeline)


# -- tamper -------------------------------------------------------------------------------------


def _checksum_ok(packet):
    fixed = Packet(bytearray(packet.raw), packet.address.copy())
    fixed.recalculate_checksums()
    return fixed.raw == packet.raw


def test_tamper_flips_payload_bytes_and_redoes_checksums():
    pipeline = Pipeline([Tamper(chance=100.0, flips=2)], seed=7)
    packet = udp_packet(b"A" * 64)
    out = pipeline.process([packet], 0)
    assert out == [packet]
    assert packet.payload != b"A" * 64 and len(packet.payload) == 64
    assert 1 <= sum(a != b for a, b in zip(packet.payload, b"A" * 64)) <= 2
    assert _checksum_ok(packet)
    assert pipeline.stats()["rules"][0]["modified"] == 1


def test_tamper_can_leave_checksums_broken():
    pipeline = Pipeline([Tamper(chance=100.0, redo_checksum=False)], seed=7)
    packet = udp_packet(b"B" * 32)
    pipeline.process([packet], 0)
    assert not _checksum_ok(packet)


def test_tamper_leaves_empty_payloads_alone():
    pipeline = Pipeline([Tamper(chance=100.0)])
    packet = tcp_packet(b"", flags=dpkt.tcp.TH_ACK)
    before = packet.raw
    pipeline.process([packet], 0)
    assert packet.raw == before


# -- reset --------------------------------------------------------------------------------------


def test_reset_answers_both_ends():
    pipeline = Pipeline([Reset(chance=100.0)])
    packet = tcp_packet(b"data!", seq=1000, ack=7000, flags=dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH)
    packet.ticket = 42
    out = pipeline.process([packet], 0)
    assert len(out) == 2
    forward, back = out
    assert forward is packet and forward.tcp.rst and forward.payload == b""
    assert forward.tcp.seq_num == 1000 and forward.dst_addr == B4
    assert back.ticket == 0 and back.tcp.rst and back.address.outbound is False
    assert (back.src_addr, back.dst_addr) == (B4, A4)
    assert (back.tcp.src_port, back.tcp.dst_port) == (80, 40000)
    assert back.tcp.seq_num == 7000 and back.tcp.ack_num == 1005
    assert _checksum_ok(forward) and _checksum_ok(back)
    stats = pipeline.stats()["rules"][0]
    assert stats["reset"] == 1 and stats["injected"] == 1
    assert_conserved(pipeline)


def test_reset_ignores_udp_and_rsts():
    pipeline = Pipeline([Reset(chance=100.0)])
    packets = [udp_packet(), tcp_packet(flags=dpkt.tcp.TH_RST)]
    assert pipeline.process(packets, 0) == packets


# -- bandwidth ----------------------------------------------------------------------------------


def test_bandwidth_paces_to_its_rate():
    pipeline = Pipeline([Bandwidth(kbps=800, queue_limit=10_000)])
    packets = [udp_packet(b"z" * 972) for _ in range(200)]       # 1000-byte packets
    sent = drive(pipeline, packets, step_ns=0)
    assert len(sent) == 200
    last = sent[-1][0]
    # 200 kB at 100 kB/s, less the initial bucket (1514 bytes: one packet).
    assert 1.97e9 < last < 2.0e9
    assert_conserved(pipeline)


def test_bandwidth_has_a_bucket_per_direction():
    pipeline = Pipeline([Bandwidth(kbps=80, burst_bytes=2000)])
    out = pipeline.process([udp_packet(b"z" * 972, outbound=True), udp_packet(b"z" * 972, outbound=False),
                            udp_packet(b"z" * 972, outbound=True)], 0)
    assert [p.address.outbound for p in out] == [True, False, True]
    assert pipeline.process([udp_packet(b"z" * 972, outbound=True)], 0) == []


def test_bandwidth_drops_beyond_its_queue():
    pipeline = Pipeline([Bandwidth(kbps=8, queue_limit=5)])
    out = pipeline.process([udp_packet(b"z" * 972) for _ in range(20)], 0)
    assert len(out) == 1
    rule = pipeline.stats()["rules"][0]
    assert rule["held"] == 5 and rule["dropped"] == 14
    assert_conserved(pipeline)


# -- the pipeline -------------------------------------------------------------------------------


def test_filter_and_direction_select_packets():
    lag = Lag(filter="udp.DstPort == 5000", direction="outbound", outbound_ms=10, inbound_ms=10)
    pipeline = Pipeline([lag])
    chosen = udp_packet(dport=5000, outbound=True)
    other_port = udp_packet(dport=6000, outbound=True)
    inbound = udp_packet(dport=5000, outbound=False)
    assert pipeline.process([chosen, other_port, inbound], 0) == [other_port, inbound]
    assert pipeline.stats()["rules"][0]["matched"] == 1


def test_disabled_rules_do_nothing():
    pipeline = Pipeline([Drop(chance=100.0, enabled=False)])
    assert len(pipeline.process(numbered(10), 0)) == 10


def test_held_packets_resume_at_the_next_rule():
    # Lag then duplicate: the copies appear when the lagged original is due.
    pipeline = Pipeline([Lag(outbound_ms=10), Duplicate(count=2, chance=100.0)])
    assert pipeline.process(numbered(1), 0) == []
    assert len(pipeline.due(10 * MS)) == 2
    assert_conserved(pipeline)


def test_every_rule_at_once_loses_nothing_uncounted():
    rules = rules_from_dicts([
        {"kind": "lag", "inbound_ms": 5, "outbound_ms": 8, "jitter_ms": 3},
        {"kind": "drop", "chance": 10.0},
        {"kind": "throttle", "frame_ms": 20, "chance": 5.0},
        {"kind": "out_of_order", "chance": 10.0},
        {"kind": "duplicate", "count": 3, "chance": 10.0},
        {"kind": "tamper", "chance": 10.0},
        {"kind": "reset", "chance": 10.0},
        {"kind": "bandwidth", "kbps": 2000, "queue_limit": 20},
        {"kind": "set_field", "fields": {"ttl": 9}},
        {"kind": "payload_replace", "find": "x", "replace": "yy"},
    ])
    pipeline = Pipeline(rules, seed=9)
    packets = [udp_packet(b"x" * 100, outbound=bool(i % 2)) if i % 3 else tcp_packet(b"x" * 50, outbound=bool(i % 2))
               for i in range(3000)]
    now = 0
    for i in range(0, 3000, 10):
        pipeline.due(now)
        pipeline.process(packets[i:i + 10], now)
        assert_conserved(pipeline)
        now += MS // 2
    pipeline.release_all()
    stats = pipeline.stats()
    assert stats["held"] == 0 and stats["dropped"] > 0 and stats["created"] > 0
    assert stats["received"] + stats["created"] == stats["sent"] + stats["dropped"]


def test_release_all_empties_every_rule():
    pipeline = Pipeline([Lag(outbound_ms=1000), Throttle(frame_ms=500, chance=100.0), Bandwidth(kbps=8)])
    pipeline.process(numbered(5), 0)
    assert pipeline.stats()["held"] == 5
    assert len(pipeline.release_all()) == 5
    assert pipeline.stats()["held"] == 0 and pipeline.next_deadline() is None


# -- serialisation and profiles -------------------------------------------------------------


def test_rules_round_trip_through_json():
    rules = rules_from_dicts([
        {"kind": "lag", "inbound_ms": 20, "outbound_ms": 40, "jitter_ms": 2, "distribution": "normal"},
        {"kind": "drop", "model": "gilbert_elliott", "filter": "udp", "direction": "inbound"},
        {"kind": "duplicate", "count": 4, "chance": 2.5, "enabled": False, "name": "dups"},
        {"kind": "set_field", "fields": {"ip.ttl": 3, "tcp.window": 1000}},
        {"kind": "payload_replace", "find": "68656c6c6f", "replace": "48454c4c4f", "mode": "hex"},
    ])
    text = json.dumps([r.to_dict() for r in rules])
    again = rules_from_dicts(json.loads(text))
    assert [r.to_dict() for r in again] == [r.to_dict() for r in rules]
    assert again[2].enabled is False and again[2].name == "dups" and again[1].direction == "inbound"


@pytest.mark.parametrize("data, words", [
    ({"kind": "warp"}, "unknown kind 'warp'"),
    ({"kind": "lag", "delay": 5}, "unknown parameter 'delay'"),
    ({"kind": "lag", "inbound_ms": 20000}, "lag.inbound_ms: 20000 is outside 0..15000"),
    ({"kind": "drop", "chance": "lots"}, "drop.chance: expects a number"),
    ({"kind": "duplicate", "count": 2.5}, "duplicate.count: expects a whole number"),
    ({"kind": "drop", "direction": "sideways"}, "direction 'sideways'"),
    ({"kind": "set_field", "fields": {"ip.colour": 1}}, "ip has no writable field 'colour'"),
    ({"kind": "set_field", "fields": {"ip.ttl": 300}}, "ip.ttl takes a whole number within 0..255"),
    ({"kind": "payload_replace", "find": "zz", "replace": "", "mode": "hex"}, "hex pattern"),
    ({"kind": "payload_replace", "find": "(", "replace": "", "mode": "regex"}, "regex pattern"),
])
def test_bad_rules_say_what_and_where(data, words):
    with pytest.raises(RuleError) as caught:
        rule_from_dict(data, index=2)
    assert words in str(caught.value) and str(caught.value).startswith("rule 3")


def test_a_bad_rule_filter_gives_its_position():
    with pytest.raises(RuleError) as caught:
        rule_from_dict({"kind": "drop", "filter": "udp and tcp.Colour == 1"})
    assert caught.value.position == 8 and "drop.filter" in str(caught.value)


def test_profiles_are_saved_and_loaded_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    rules = [Lag(outbound_ms=12), Drop(chance=1.5, filter="udp")]
    path = save_profile("my link", rules, description="test", filter="udp")
    assert path == tmp_path / "divertgui" / "profiles" / "my link.json"
    assert list_profiles() == ["my link"]
    loaded = load_profile("my link")
    assert loaded["filter"] == "udp" and loaded["rules"] == [r.to_dict() for r in rules]
    with pytest.raises(RuleError, match="profile name"):
        save_profile("../escape", rules)


def test_a_corrupt_profile_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"rules": [{"kind": "lag", "inbound_ms": -1}]}')
    with pytest.raises(RuleError, match="broken.json.*rule 1.*outside"):
        load_profile(str(path))
    path.write_text('{"rules": [')
    with pytest.raises(RuleError, match="broken.json is not valid JSON"):
        load_profile(str(path))


def test_every_preset_loads():
    assert "clumsy-defaults" in list_presets()
    for name in list_presets():
        rules = rules_from_dicts(load_profile(name)["rules"])
        assert rules


def test_lag_keeps_the_latest_delays_for_charts():
    rule = Lag(outbound_ms=20, jitter_ms=5)
    Pipeline([rule], seed=2).process(numbered(10), 0)
    assert len(rule.recent_delays_ms) == 10 and all(15 <= d <= 25 for d in rule.recent_delays_ms)


@pytest.mark.parametrize("raw", [b"", b"\x45\x00", bytes(19), b"\x45" + bytes(30), b"\x60" + bytes(10),
                                 bytes.fromhex("4500002c000100004006") + bytes(10)])
def test_every_rule_survives_malformed_packets(raw):
    # Every chance at 100 % (drop's at 0, so that the packet reaches the rules after it).
    rules = rules_from_dicts([
        {"kind": "lag", "outbound_ms": 1},
        {"kind": "drop", "chance": 0.0},
        {"kind": "throttle", "chance": 100.0},
        {"kind": "out_of_order", "chance": 100.0},
        {"kind": "duplicate", "chance": 100.0},
        {"kind": "tamper", "chance": 100.0},
        {"kind": "reset", "chance": 100.0},
        {"kind": "bandwidth", "kbps": 8},
        {"kind": "set_field", "fields": {"ttl": 3, "tcp.window": 5}},
        {"kind": "payload_replace", "find": "a", "replace": "bb"},
    ])
    pipeline = Pipeline(rules)
    pipeline.process([Packet(raw, Address(outbound=True))], 0)
    for step in range(1, 5):
        pipeline.due(step * 1_000_000_000)
    pipeline.release_all()
    stats = pipeline.stats()
    assert stats["held"] == 0 and stats["received"] == 1
    assert_conserved(pipeline)
