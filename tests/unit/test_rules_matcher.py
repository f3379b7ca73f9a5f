"""Several filters judged by one generated function give exactly the rule set each filter gives alone,
and a pipeline deciding matches that way moves packets exactly as one testing each rule in turn."""

from __future__ import annotations

import random

from hypothesis import given, settings, strategies as st

from divertgui.engine.address import Address
from divertgui.engine.filter import FilterError, compile_filter
from divertgui.engine.filter.compiler import header_key_bytes
from divertgui.engine.filter.matcher import compile_batch_matcher, compile_matcher
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


def _keyed_filter(rng: random.Random):
    """A filter every test of which reads only what a header key holds (ports, addresses, flags, lengths)."""
    for _ in range(50):
        filter_ = _valid(packet_gen.filter_text(rng))
        if header_key_bytes([filter_.tree]) is not None:
            return filter_
    return compile_filter("udp.DstPort == 53 or tcp.SrcPort == 80")


def _family(rng: random.Random, raw: bytes) -> list[bytes]:
    """`raw` and copies of it with a few bytes changed, cut short or grown: packets that
    share a header key unless a changed byte is one the key holds."""
    family = [raw]
    for _ in range(6):
        data = bytearray(raw)
        if data and rng.random() < 0.8:
            for _ in range(rng.randrange(1, 3)):
                data[rng.randrange(min(len(data), 56))] = rng.randrange(256)
        else:
            data = bytearray(packet_gen.mangle(rng, raw))
        family.append(bytes(data))
    return family


def _addresses(address: Address) -> list[Address]:
    flipped = address.copy()
    flipped.outbound = not address.outbound
    wrong_version = address.copy()
    wrong_version.ipv6 = not address.ipv6
    return [address, flipped, wrong_version]


@settings(max_examples=120, deadline=None)
@given(seed=st.integers(0, 2 ** 32), count=st.integers(1, 10), kept=st.sampled_from((3, 4096)))
def test_batch_matcher_gives_each_packet_the_per_packet_answer(seed, count, kept):
    rng = random.Random(seed)
    entries = _entries(rng, count)
    for index in range(len(entries)):
        if entries[index] is not None and entries[index][0] is not None and rng.random() < 0.7:
            entries[index] = (_keyed_filter(rng), entries[index][1])
    masks = compile_batch_matcher(entries, keys_kept=kept)
    packets = []
    for _ in range(6):
        first = packet_gen.packet(rng)
        address = packet_gen.address_for(rng, first)
        packets += [Packet(bytearray(raw), each) for raw in _family(rng, first) for each in _addresses(address)]
    rng.shuffle(packets)
    for start in range(0, len(packets), 40):
        batch = packets[start:start + 40]
        assert masks(batch) == [_alone(entries, bytes(p.buffer), p.address) for p in batch], (
            [None if e is None else (e[0] and e[0].text, e[1]) for e in entries])


def test_a_flow_is_judged_once_per_header_key():
    import dpkt
    asked = []
    entries = [(compile_filter(f"udp.DstPort == {port} or tcp.DstPort == {port}"), None) for port in (53, 80)]
    match = compile_matcher(entries)
    masks = compile_batch_matcher(entries, lambda raw, address: asked.append(1) or match(raw, address))
    packets = []
    for i in range(50):
        # The identification, checksum and payload change from packet to packet; the ports do not.
        udp = dpkt.udp.UDP(sport=4000, dport=53, data=bytes([i]) * 20)
        udp.ulen = len(udp)
        ip = dpkt.ip.IP(id=i, src=b"\x0a\0\0\x01", dst=b"\x0a\0\0\x02", p=17, ttl=64, data=udp)
        ip.len = len(ip)
        packets.append(Packet(bytes(ip), Address(outbound=bool(i % 2))))
    assert masks(packets) == [1] * 50
    assert len(asked) == 2      # one key per direction
    assert masks([Packet(_udp(80), Address())]) == [2]


def test_filters_reading_more_than_headers_have_no_key():
    assert header_key_bytes([compile_filter("tcp.Payload[0] == 0x41").tree]) is None
    assert header_key_bytes([compile_filter("udp and random8 < 10").tree]) is None
    assert header_key_bytes([compile_filter("udp and loopback").tree]) is None
    offsets = header_key_bytes([compile_filter("udp.DstPort == 53 and ip.TTL > 1 or tcp.Syn").tree])
    assert {8, 22, 23} <= set(offsets[4][17]) and {42, 43} <= set(offsets[6][17])
    assert 4 not in offsets[4][17]      # the identification, which changes with every packet
    assert 32 not in offsets[4][17] and 32 in offsets[4][6]     # TCP's header length, TCP's only
    assert max(offsets[4][None]) < 20


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
            "udp.PayloadLength > 3", "tcp.Payload[0] == 0x41", "ipv6 or ip.TTL < 10",
            "udp.DstPort == 53 or tcp.DstPort == 53", "localPort == 53 or remotePort == 80")


def _rule_dicts(rng: random.Random) -> list[dict]:
    kinds = [
        lambda: {"kind": "set_field", "fields": {"ip.ttl": rng.choice((7, 9, 64))}},
        lambda: {"kind": "set_field", "fields": {"dst_port": rng.choice((53, 80))}},
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
    # Batches of packets alike but for a few bytes, as a flow's are, and the packets sent again.
    first = _packets(rng, 30)
    batches = [first, [Packet(bytearray(raw), p.address.copy()) for p in first for raw in _family(rng, p.raw)[1:3]]]
    for packets in batches + [batches[0]]:
        copies = [Packet(bytearray(p.raw), p.address.copy()) for p in packets]
        got = pipeline.process(packets, 0)
        expected = _walk(reference.rules, copies, 0)
        assert [(bytes(p.raw), p.address.outbound) for p in got] == \
            [(bytes(p.raw), p.address.outbound) for p in expected]
        assert [rule.stats() for rule in pipeline.rules] == [rule.stats() for rule in reference.rules]
