"""A rule passing, dropping or copying a batch at once (Rule.pass_matched, Rule.draw_matched) leaves
everything as its per-packet path does: the packets sent, the counters, held packets, delays
and draws."""

import pytest

from divertgui.engine.address import Address
from divertgui.engine.packet import Packet
from divertgui.engine.rules import Pipeline, rules_from_dicts
from tests.unit.test_rules_conditions import tcp_packet, udp_packet

MS = 1_000_000

CASES = [
    {"kind": "lag", "inbound_ms": 0, "outbound_ms": 0},
    {"kind": "lag", "inbound_ms": 0, "outbound_ms": 0, "keep_order": True},
    {"kind": "lag", "inbound_ms": 0, "outbound_ms": 2},
    {"kind": "drop", "chance": 0.0},
    {"kind": "drop", "chance": 30.0},
    {"kind": "drop", "chance": 100.0},
    {"kind": "drop", "model": "gilbert_elliott", "chance": 0.0},
    {"kind": "drop", "model": "gilbert_elliott", "enter_bad": 20.0, "leave_bad": 30.0, "loss_good": 5.0},
    {"kind": "throttle", "chance": 0.0},
    {"kind": "throttle", "chance": 20.0, "frame_ms": 3},
    {"kind": "throttle", "chance": 20.0, "frame_ms": 0},
    {"kind": "out_of_order", "chance": 0.0},
    {"kind": "out_of_order", "chance": 20.0},
    {"kind": "duplicate", "chance": 0.0},
    {"kind": "duplicate", "chance": 20.0},
    {"kind": "duplicate", "chance": 100.0, "count": 3},
    {"kind": "tamper", "chance": 0.0},
    {"kind": "tamper", "chance": 20.0},
    {"kind": "reset", "chance": 0.0},
    {"kind": "reset", "chance": 5.0},
    {"kind": "bandwidth", "kbps": 10_000_000, "queue_limit": 100_000},
    {"kind": "bandwidth", "kbps": 100, "queue_limit": 5},
    {"kind": "bandwidth", "kbps": 2000, "queue_limit": 50},
    # A bucket that passes the first batches whole, then queues: when the first queued
    # packet is due shows the tokens to the byte (one byte is 1 ms at 8 kbps).
    {"kind": "bandwidth", "kbps": 8, "burst_bytes": 5000, "queue_limit": 50},
]


def _batches():
    batches = []
    for n in range(12):
        batch = []
        for i in range(20):
            outbound = bool((n + i) % 3)
            if i % 2:
                batch.append(udp_packet(b"u" * (i * 20), outbound=outbound, dport=5000 + i % 4))
            else:
                batch.append(tcp_packet(b"t" * 30, seq=1000 + i, outbound=outbound))
        batches.append(batch)
    return batches


def _run(rules: list[dict], batched: bool) -> tuple:
    pipeline = Pipeline(rules_from_dicts(rules), seed=7)
    if not batched:
        for rule in pipeline.rules:
            rule.pass_matched = rule.draw_matched = None
    sent, deadlines, received = [], [], set()
    now = 0
    for batch in _batches():
        received.update(id(packet) for packet in batch)
        now += MS
        sent += pipeline.due(now) + pipeline.process(batch, now)
        deadlines.append(pipeline.next_deadline())
    now += 10_000 * MS
    sent += pipeline.due(now) + pipeline.release_all()
    delays = [list(getattr(rule, "recent_delays_ms", ())) for rule in pipeline.rules]
    draws = [rule.rng.random() for rule in pipeline.rules]
    # Which packets sent are the ones received (their verdicts), and which are copies.
    originals = [id(p) in received for p in sent]
    return ([bytes(p.raw) for p in sent], [p.address.outbound for p in sent], originals, pipeline.stats(), delays,
            draws, deadlines)


@pytest.mark.parametrize("rule", CASES, ids=lambda r: "-".join(f"{v}" for v in r.values()))
@pytest.mark.parametrize("filter", ["true", "udp", "udp.DstPort == 5001 or tcp"])
def test_batch_path_matches_per_packet_path(rule, filter):
    rules = [{**rule, "filter": filter}, {"kind": "lag", "filter": "tcp", "inbound_ms": 0, "outbound_ms": 0}]
    assert _run(rules, batched=True) == _run(rules, batched=False)


def test_chance_zero_rules_take_the_batch_at_once():
    rules = [{"kind": kind, "chance": 0.0} for kind in ("drop", "duplicate", "tamper", "reset", "out_of_order")]
    pipeline = Pipeline(rules_from_dicts(rules))
    for rule in pipeline.rules:
        rule.process = None     # any per-packet call would fail
    batch = [udp_packet(b"x"), Packet(b"\x00" * 8, Address(outbound=True))]
    assert pipeline.process(batch, MS) == batch
    assert [r["matched"] for r in pipeline.stats()["rules"]] == [2] * 5
