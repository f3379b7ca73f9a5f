"""may_overlap: False only for filters no packet can pass together."""

import random

import pytest

from divertgui.engine.address import Layer
from divertgui.engine.filter import FilterError, compile_filter
from divertgui.engine.filter.overlap import may_overlap
from tests import packet_gen


def overlap(first: str, second: str) -> bool:
    return may_overlap(compile_filter(first).tree, compile_filter(second).tree)


@pytest.mark.parametrize("first, second", [
    ("icmp", "tcp.DstPort == 8000"),
    ("udp", "tcp"),
    ("icmpv6", "ip"),
    ("icmp", "ipv6"),
    ("ip", "ipv6.HopLimit == 1"),
    ("tcp.DstPort == 80", "tcp.DstPort == 443"),
    ("tcp.DstPort < 100", "tcp.DstPort > 200"),
    ("inbound", "outbound"),
    ("(tcp ? tcp.DstPort == 1 : udp)", "icmp"),
    ("tcp.DstPort == 8000 and inbound", "udp or (tcp and outbound)"),
    ("false", "true"),
])
def test_filters_that_exclude_each_other(first, second):
    assert not overlap(first, second)
    assert not overlap(second, first)


@pytest.mark.parametrize("first, second", [
    ("true", "icmp"),
    ("tcp", "tcp.DstPort == 8000"),
    ("tcp.DstPort != 80", "tcp.DstPort == 8000"),
    ("tcp.DstPort <= 80", "tcp.DstPort >= 80"),
    ("ip.Protocol == 1", "tcp"),          # undecided here: counted as "may overlap"
    ("not tcp", "udp"),
    ("udp or icmp", "icmp.Type == 8"),
    ("(tcp ? outbound : udp)", "udp.DstPort == 53"),
    ("packet[0] == 0x45", "ip"),
    ("inbound", "not outbound"),
])
def test_filters_that_may_both_match(first, second):
    assert overlap(first, second)


@pytest.mark.parametrize("seed", range(3))
def test_no_generated_packet_passes_two_filters_said_to_exclude_each_other(seed):
    rng = random.Random(seed)
    disjoint_pairs = 0
    for _ in range(300):
        try:
            first, second = (compile_filter(packet_gen.filter_text(rng)) for _ in range(2))
        except FilterError:
            continue
        if may_overlap(first.tree, second.tree):
            continue
        disjoint_pairs += 1
        for _ in range(30):
            raw = packet_gen.packet(rng)
            address = packet_gen.address_for(rng, raw, Layer.NETWORK)
            assert not (first.match(raw, address) and second.match(raw, address)), (first, second, raw.hex())
    assert disjoint_pairs > 10
