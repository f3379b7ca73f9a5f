"""Several filters judged by one generated function give exactly the rule set each filter gives alone,
and a pipeline deciding matches that way moves packets exactly as one testing each rule in turn."""

from __future__ import annotations

import random

from hypothesis import given, settings, strategies as st

from divertgui.engine.address import Address
from divertgui.engine.filter import FilterError, compile_filter
from divertgui.engine.filter.matcher import compile_matcher
from divertgui.engine.packet import Packet
from divertgui.engine.rules import Pipeline, rules_from_dicts
from tests import packet_gen

DIRECTIONS = (None, True, False)


def _alone(entries, raw, address) -> int:
    """The reference answer: each entry judged by itself, as a single rule is."""
    mask = 0
    for index, entry in enumerate(entries):
        if entry is None:
            continue
        filter_, outbound = entry
        if outbound is not None and bool(address.outbound) != outbound:
            continue
        if filter_ is None or filter_.match(raw, address):
            mask |= 1 << index
    return mask


def _valid(text: str):
    """The filter, or (for a generated text the language refuses) one that never matches."""
    try:
        return compile_filter(text)
    except FilterError:
        return compile_filter("false")


def _entries(rng: random.Random, count: int) -> list:
    entries = []
    shared = [packet_gen.test_text(rng) for _ in range(3)]
    for _ in range(count):
        pick = rng.random()
        if pick < 0.08:
            entries.append(None)
            continue
        if pick < 0.16:
            filter_ = None
        elif pick < 0.4:
            # Rules told apart by the values of a few fields, as port-by-port profiles are.
            tests = [f"{rng.choice(('udp.DstPort', 'tcp.DstPort', 'ip.TTL', 'protocol', 'random8'))} == "
                     f"{rng.choice((6, 17, 53, 64, 80, 443))}" for _ in range(rng.randrange(1, 4))]
            filter_ = _valid(" or ".join(tests))
        elif pick < 0.6:
            # Filters that share operands, as rules of one profile often do.
            parts = rng.sample(shared, rng.randrange(1, 4)) + [packet_gen.filter_text(rng, 2)]
            rng.shuffle(parts)
            filter_ = _valid(" and ".join(f"({part})" for part in parts))
        else:
            filter_ = _valid(packet_gen.filter_text(rng))
        entries.append((filter_, rng.choice(DIRECTIONS)))
    return entries


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2 ** 32), count=st.integers(0, 12))
def test_merged_filters_match_exactly_the_filters_alone(seed, count):
    rng = random.Random(seed)
    entries = _entries(rng, count)
    match = compile_matcher(entries)
    for _ in range(40):
        raw = packet_gen.packet(rng)
        address = packet_gen.address_for(rng, raw)
        assert match(raw, address) == _alone(entries, raw, address), (
            [None if e is None else (e[0] and e[0].text, e[1]) for e in entries], raw.hex(), address)


def test_shared_operands_are_tested_once():
    entries = [(compile_filter(f"udp and udp.DstPort == {port}"), None) for port in range(50, 58)]
    match = compile_matcher(entries)
    raw = _udp(53)
    assert match(raw, Address(outbound=True)) == 1 << 3
    assert match(raw[:10], Address(outbound=True)) == 0


def test_rules_told_apart_by_a_port_are_decided_by_one_lookup_per_field():
    ports = range(50, 58)
    entries = [(compile_filter(f"udp.DstPort == {port} or tcp.DstPort == {port}"), None) for port in ports]
    entries.append((compile_filter("udp.DstPort == 53 and ip.TTL == 64"), None))
    match = compile_matcher(entries)
    assert match(_udp(53), Address(outbound=True)) == 1 << 3 | 1 << 8
    assert match(_udp(57), Address(outbound=False)) == 1 << 7
    assert match(_udp(58), Address(outbound=False)) == 0
    assert match(_udp(53)[:10], Address(outbound=True)) == 0


def test_directions_and_match_all_entries():
    entries = [(None, True), (None, None), (compile_filter("udp"), False), None]
    match = compile_matcher(entries)
    raw = _udp(53)
    assert match(raw, Address(outbound=True)) == 0b011
    assert match(raw, Address(outbound=False)) == 0b110
    # A rule whose filter is "true" matches what is not even IP; "udp" does not.
    assert match(b"\x00" * 5, Address(outbound=False)) == 0b010


def _udp(port: int) -> bytes:
    import dpkt
    udp = dpkt.udp.UDP(sport=4000, dport=port, data=b"payload")
    udp.ulen = len(udp)
    ip = dpkt.ip.IP(src=b"\x0a\0\0\x01", dst=b"\x0a\0\0\x02", p=17, ttl=64, data=udp)
    ip.len = len(ip)
    return bytes(ip)


# -- the pipeline against the plain per-rule walk ---------------------------------------------

def _walk(rules, packets, now_ns):
    """Each enabled rule in turn tests every packet that reached it: the behaviour to keep."""
    for rule in rules:
        if not rule.enabled:
            continue
        passed = []
        for packet in packets:
            if rule.applies(packet):
                rule.counters["matched"] += 1
                rule.process(packet, now_ns, passed)
            else:
                if rule.observe is not None:
                    rule.observe(packet)
                passed.append(packet)
        packets = passed
    return packets


_FILTERS = ("true", "udp", "tcp", "ip.TTL == 7", "ip.TTL != 7 and udp", "tcp.Rst", "outbound and tcp",
            "udp.PayloadLength > 3", "tcp.Payload[0] == 0x41", "ipv6 or ip.TTL < 10")


def _rule_dicts(rng: random.Random) -> list[dict]:
    kinds = [
        lambda: {"kind": "set_field", "fields": {"ip.ttl": rng.choice((7, 9, 64))}},
        lambda: {"kind": "tamper", "chance": 100.0, "flips": 2},
        lambda: {"kind": "duplicate", "count": rng.choice((2, 3)), "chance": 50.0},
        lambda: {"kind": "reset", "chance": 50.0},
        lambda: {"kind": "drop", "chance": 30.0},
        lambda: {"kind": "payload_replace", "find": "A", "replace": "BB"},
        lambda: {"kind": "lag", "inbound_ms": 0, "outbound_ms": 0},
    ]
    rules = []
    for _ in range(rng.randrange(1, 9)):
        data = rng.choice(kinds)()
        data.update(filter=rng.choice(_FILTERS), direction=rng.choice(("both", "inbound", "outbound")),
                    enabled=rng.random() < 0.9)
        rules.append(data)
    return rules


def _packets(rng: random.Random, count: int) -> list[Packet]:
    packets = []
    for _ in range(count):
        raw = packet_gen.packet(rng)
        packets.append(Packet(bytearray(raw), packet_gen.address_for(rng, raw)))
    return packets


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2 ** 32))
def test_pipeline_moves_packets_as_the_per_rule_walk(seed):
    rng = random.Random(seed)
    dicts = _rule_dicts(rng)
    pipeline, reference = Pipeline(rules_from_dicts(dicts), seed=seed), Pipeline(rules_from_dicts(dicts), seed=seed)
    packets = _packets(rng, 30)
    copies = [Packet(bytearray(p.raw), p.address.copy()) for p in packets]
    got = pipeline.process(packets, 0)
    expected = _walk(reference.rules, copies, 0)
    assert [(bytes(p.raw), p.address.outbound) for p in got] == [(bytes(p.raw), p.address.outbound) for p in expected]
    assert [rule.stats() for rule in pipeline.rules] == [rule.stats() for rule in reference.rules]
