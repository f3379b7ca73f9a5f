"""Malformed packets never raise out of match(); absurd filters raise FilterError only."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from divertgui.engine.address import Address
from divertgui.engine.filter import FilterError, compile_filter
from tests import packet_gen

FILTERS = [compile_filter(text) for text in (
    "true", "tcp.DstPort == 80 or udp.Payload32[-1] == 5", "packet32[-4b] > 7 and ipv6.SrcAddr > ::",
    "(icmp ? icmp.Body == 1 : localPort == 3)", "random32 < 5 or tcp.Payload16[10] == 1 or fragment",
    "remoteAddr == 10.0.0.1 and ip.FragOff == 0 and tcp.PayloadLength > 2",
)]


@given(st.binary(max_size=120), st.booleans(), st.booleans())
def test_malformed_bytes_never_raise(raw, outbound, ipv6):
    address = Address(outbound=outbound, ipv6=ipv6)
    for compiled in FILTERS:
        assert compiled.match(raw, address) in (True, False)


def test_truncations_of_generated_packets_never_raise():
    rng = random.Random(5)
    for _ in range(300):
        raw = packet_gen.packet(rng)
        for cut in range(0, len(raw) + 1, 3):
            address = packet_gen.address_for(rng, raw[:cut])
            for compiled in FILTERS:
                assert compiled.match(raw[:cut], address) in (True, False)


@pytest.mark.parametrize("text", [
    "(" * 5000 + "tcp" + ")" * 5000,
    " or ".join(["tcp"] * 5000),
    "tcp and " * 3000 + "udp",
    "not " * 100000 + "tcp",
    "\x00\xff\x01garbage",
    "x" * 100000,
    "(tcp ? " * 300 + "udp" + " : icmp)" * 300,
    "packet[" * 50,
])
def test_absurd_filters_raise_filter_error(text):
    with pytest.raises(FilterError):
        compile_filter(text)


@given(st.text(max_size=60))
def test_any_text_compiles_or_raises_filter_error(text):
    try:
        compile_filter(text)
    except FilterError as exc:
        assert 0 <= exc.position <= len(text)
