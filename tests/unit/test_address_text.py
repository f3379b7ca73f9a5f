"""The address helpers against WinDivert's: the cases its code decides
differently from Python's ipaddress, then generated text and numbers
compared with the reference library's own helpers."""

import ipaddress
import random

import pytest

from divertgui.engine.address import (
    format_ipv4_address, format_ipv6_address, parse_ipv4_address, parse_ipv6_address,
)


def test_ipv4_parts_with_leading_zeros_are_decimal():
    # WinDivertHelperParseIPv4Address reads each part with WinDivertAToI: decimal digits, zeros allowed.
    assert parse_ipv4_address("010.0.0.1") == 0x0A000001


def test_an_ipv4_part_is_the_low_word_of_its_number():
    # WinDivertAToI(str, &str, &part, 1) keeps the number's low 32 bits and checks no higher word.
    assert parse_ipv4_address("4294967306.0.0.1") == 0x0A000001


@pytest.mark.parametrize("text", [" 10.0.0.1", "10.0.0.1 ", "10.0.0", "256.0.0.1", "1.2.3.4.5", "0x1.2.3.4", ""])
def test_not_ipv4_addresses(text):
    with pytest.raises(ValueError, match="IPv4"):
        parse_ipv4_address(text)


def test_an_ipv4_tail_only_after_zeros_or_ffff():
    # WinDivertHelperParseIPv6Address: "Validate IPv4 address" takes the tail only
    # after ::, or ::ffff:, so a NAT64 prefix such as 64:ff9b:: is refused.
    with pytest.raises(ValueError, match="IPv6"):
        parse_ipv6_address("64:ff9b::1.2.3.4")
    assert parse_ipv6_address("::ffff:1.2.3.4") == 0xFFFF01020304
    assert parse_ipv6_address("::1.2.3.4") == 0x01020304


@pytest.mark.parametrize("text, expected", [
    # WinDivertFormatIPv6Addr: "IPv4 special case" writes a mapped address as its dotted quad alone ...
    ("::ffff:1.2.3.4", "1.2.3.4"),
    # ... and the first longest run of zero groups becomes "::", even a run of one.
    ("1:0:2:3:4:5:6:7", "1::2:3:4:5:6:7"),
    ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7::"),
    ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4"),
    ("::", "::"),
    ("::1", "::1"),
])
def test_ipv6_text_as_windivert_writes_it(text, expected):
    assert format_ipv6_address(int(ipaddress.IPv6Address(text))) == expected


def _ipv4_text(rng: random.Random) -> str:
    def part():
        if rng.random() < 0.85:
            return rng.choice((str(rng.randrange(256)), f"0{rng.randrange(100)}", str((1 << 32) + rng.randrange(300))))
        return rng.choice((str(rng.randrange(1 << 140)), "", "x", "00", "-1"))
    parts = [part() for _ in range(rng.choice((3, 4, 4, 4, 4, 5)))]
    text = ".".join(parts)
    if rng.random() < 0.1:
        text = rng.choice((" ", "", "\t")) + text + rng.choice((" ", ":", "", "/8"))
    return text


def _ipv6_text(rng: random.Random) -> str:
    if rng.random() < 0.4:
        value = sum(rng.choice((0, 0, 1, 0xFFFF, rng.randrange(1 << 16))) << 16 * k for k in range(8))
        if rng.random() < 0.2:
            value = rng.choice((0, 0xFFFF, 0x64FF9B << 64)) << 32 | rng.getrandbits(32)
        address = ipaddress.IPv6Address(value)
        return rng.choice((str(address), address.exploded, str(address).upper()))
    groups = [rng.choice(("0", "00", "ffff", "FFFF", f"{rng.randrange(1 << 16):x}", f"{rng.randrange(16):x}",
                          "12345", "g", "")) for _ in range(rng.randrange(1, 10))]
    if rng.random() < 0.6:
        groups.insert(rng.randrange(len(groups) + 1), "")
    if rng.random() < 0.3:
        groups[-1] = _ipv4_text(rng)
    text = ":".join(groups)
    if rng.random() < 0.2:
        text = rng.choice(("::", ":", "::ffff:", "64:ff9b::", "::0:")) + text
    return text


@pytest.mark.parametrize("version, generate, windivert_accepts", [
    (4, _ipv4_text, 700), (6, _ipv6_text, 2000)])
def test_same_parsing_as_windivert(reference, version, generate, windivert_accepts):
    mine = {4: parse_ipv4_address, 6: parse_ipv6_address}[version]
    theirs = {4: reference.parse_ipv4_address, 6: reference.parse_ipv6_address}[version]
    rng = random.Random(version)
    accepted = 0
    for _ in range(5000):
        text = generate(rng)
        expected = theirs(text)
        if expected is None:
            with pytest.raises(ValueError):
                mine(text)
        else:
            assert mine(text) == expected, text
            accepted += 1
    assert accepted > windivert_accepts


def test_same_address_text_as_windivert(reference):
    rng = random.Random(8)
    for _ in range(3000):
        groups = [rng.choice((0, 0, 1, 0xFFFF, rng.randrange(1 << 16))) for _ in range(8)]
        value = sum(group << 16 * (7 - k) for k, group in enumerate(groups))
        if rng.random() < 0.1:
            value = 0xFFFF00000000 | rng.getrandbits(32)
        assert format_ipv6_address(value) == reference.format_ipv6_address(value), hex(value)
        assert format_ipv4_address(value & 0xFFFFFFFF) == reference.format_ipv4_address(value & 0xFFFFFFFF)
