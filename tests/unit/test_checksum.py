"""calc_checksums against WinDivert's own (the reference in pydivert's Linux
wheel) on generated packets, and decrement_ttl against WinDivert's rules."""

from __future__ import annotations

import os
import random
import struct

import pytest

from divertgui.engine.address import Address
from divertgui.engine.checksum import ChecksumFlag, calc_checksums, decrement_ttl, internet_checksum
from divertgui.engine.headers import IPPROTO_TCP, parse_headers
from tests import oracle, packet_gen

ALL_FLAGS = 0x1F


def require_oracle():
    if not oracle.AVAILABLE:
        if os.environ.get("CI") == "true":
            pytest.fail(oracle.UNAVAILABLE_REASON)
        pytest.skip(oracle.UNAVAILABLE_REASON)


def tcp_header_overruns(raw: bytes) -> bool:
    """A TCP header that claims more bytes than the buffer holds.

    WinDivert then sums bytes past the end of the packet, so its checksum
    there depends on whatever memory follows: calc_checksums refuses
    instead, and the comparison leaves that checksum out.
    """
    layout = parse_headers(raw)
    if layout is None or layout.transport != IPPROTO_TCP:
        return False
    start = layout.transport_offset
    return start + (raw[start + 12] >> 4) * 4 > len(raw)


def test_checksums_equal_the_reference_on_generated_packets():
    require_oracle()
    rng = random.Random(20260501)
    compared = overruns = 0
    for _ in range(6000):
        raw = packet_gen.packet(rng)
        flags = 0 if rng.random() < 0.5 else rng.randrange(ALL_FLAGS + 1)
        ours = bytearray(raw)
        result = calc_checksums(ours, None, flags)
        reference = oracle.calc_checksums(raw, None, flags)
        if tcp_header_overruns(raw) and not flags & ChecksumFlag.NO_TCP_CHECKSUM:
            overruns += 1
            at = parse_headers(raw).transport_offset + 16
            assert result is False
            assert ours[at:at + 2] == raw[at:at + 2], "the TCP checksum must be left as it was"
            assert ours[:at] + ours[at + 2:] == reference[:at] + reference[at + 2:]
            continue
        assert bytes(ours) == reference, f"flags={flags:#x} packet={raw.hex()}"
        compared += 1
    assert compared > 5000 and overruns > 0


def test_every_transport_is_compared_with_each_flag_alone():
    require_oracle()
    rng = random.Random(7)
    seen = set()
    for _ in range(1500):
        raw = packet_gen.ipv4_packet(rng) if rng.random() < 0.5 else packet_gen.ipv6_packet(rng)
        layout = parse_headers(raw)
        if layout is None or tcp_header_overruns(raw):
            continue
        seen.add((layout.version, layout.transport))
        for flag in ChecksumFlag:
            ours = bytearray(raw)
            calc_checksums(ours, None, flag)
            assert bytes(ours) == oracle.calc_checksums(raw, None, flag), f"{flag!r} {raw.hex()}"
    assert {(4, 6), (4, 17), (4, 1), (6, 6), (6, 17), (6, 58)} <= seen


def test_large_packets_equal_the_reference():
    # Long payloads take another summing path than short ones.
    require_oracle()
    rng = random.Random(99)
    for size in [700, 767, 768, 769, 1000, 1459, 1460, 8999, 65495] + [rng.randrange(600, 3000) for _ in range(40)]:
        body = rng.randbytes(size)
        for raw in (_tcp_packet(body), _udp6_packet(body)):
            if len(raw) > 65535:
                continue
            ours = bytearray(raw)
            assert calc_checksums(ours) is True
            assert bytes(ours) == oracle.calc_checksums(raw), f"payload of {size} bytes"


def _tcp_packet(payload: bytes = b"hello") -> bytes:
    tcp = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 5 << 4, 0x18, 1024, 0xDEAD, 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0xBEEF,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    return ip + tcp


def _udp6_packet(payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", 5353, 5353, 8 + len(payload), 0x1234) + payload
    return struct.pack("!IHBB16s16s", 6 << 28, len(udp), 17, 64, b"\xfe\x80" + b"\0" * 13 + b"\1",
                       b"\xff\x02" + b"\0" * 13 + b"\xfb") + udp


def test_computed_checksums_verify():
    packet = bytearray(_tcp_packet(b"odd!!"))
    assert calc_checksums(packet) is True
    assert internet_checksum(int.from_bytes(packet[:20], "big")) == 0
    pseudo = int.from_bytes(packet[12:20], "big") + 6 + (len(packet) - 20)
    segment = int.from_bytes(packet[20:], "big") << 8   # odd length: zero pad
    assert internet_checksum(pseudo + segment) == 0


def test_address_checksum_bits_are_set_for_what_was_computed():
    address = Address(ip_checksum=False, tcp_checksum=False, udp_checksum=False)
    assert calc_checksums(bytearray(_tcp_packet()), address) is True
    assert (address.ip_checksum, address.tcp_checksum, address.udp_checksum) == (True, True, False)

    address = Address(ipv6=True, ip_checksum=False, tcp_checksum=False, udp_checksum=False)
    assert calc_checksums(bytearray(_udp6_packet(b"x")), address) is True
    assert (address.ip_checksum, address.tcp_checksum, address.udp_checksum) == (False, False, True)

    address = Address(ip_checksum=False, tcp_checksum=False)
    calc_checksums(bytearray(_tcp_packet()), address, ChecksumFlag.NO_TCP_CHECKSUM)
    assert (address.ip_checksum, address.tcp_checksum) == (True, False)


def test_a_zero_udp_checksum_is_sent_as_ffff():
    # Find a payload whose UDP checksum computes to 0: it must become 0xFFFF.
    for value in range(65536):
        packet = bytearray(_udp6_packet(value.to_bytes(2, "big")))
        calc_checksums(packet)
        if packet[46:48] == b"\xff\xff":
            trial = bytearray(packet)
            trial[46:48] = b"\0\0"
            pseudo = int.from_bytes(trial[8:40], "big") + 17 + len(trial) - 40
            assert internet_checksum(pseudo + int.from_bytes(trial[40:], "big")) in (0, 0xFFFF)
            return
    pytest.fail("no payload gave a zero UDP checksum")


def test_fragments_and_short_packets_get_no_transport_checksum():
    packet = bytearray(_tcp_packet())
    packet[6:8] = b"\x20\x00"    # more fragments
    before = bytes(packet[36:38])
    assert calc_checksums(packet) is False
    assert bytes(packet[36:38]) == before
    assert internet_checksum(int.from_bytes(packet[:20], "big")) == 0, "the IP checksum is still fixed"

    extended = bytearray(_tcp_packet())
    extended[2:4] = (len(extended) + 10).to_bytes(2, "big")
    assert calc_checksums(extended) is False

    assert calc_checksums(bytearray(b"\x45\x00")) is False
    assert calc_checksums(bytearray()) is False


def test_calc_checksums_refuses_immutable_bytes():
    with pytest.raises(TypeError, match="bytearray"):
        calc_checksums(_tcp_packet())


def test_internet_checksum_folds_like_windivert():
    assert internet_checksum(0) == 0xFFFF
    assert internet_checksum(0xFFFF) == 0          # a non-zero sum that folds to 0xFFFF
    assert internet_checksum(0x0001_0000) == 0xFFFE   # end-around carry
    assert internet_checksum(0x1234) == 0xEDCB


# decrement_ttl


def _ipv4_with_ttl(ttl: int) -> bytearray:
    packet = bytearray(_tcp_packet())
    packet[8] = ttl
    calc_checksums(packet)
    return packet


@pytest.mark.parametrize("ttl", [2, 3, 64, 128, 255])
def test_decrement_ttl_keeps_the_ipv4_checksum_valid(ttl):
    packet = _ipv4_with_ttl(ttl)
    assert decrement_ttl(packet) is True
    assert packet[8] == ttl - 1
    assert internet_checksum(int.from_bytes(packet[:20], "big")) == 0


def test_decrement_ttl_checksum_on_many_headers():
    rng = random.Random(11)
    for _ in range(2000):
        packet = bytearray(_tcp_packet())
        packet[4:6] = rng.randbytes(2)
        packet[8] = rng.randrange(2, 256)
        packet[12:20] = rng.randbytes(8)
        calc_checksums(packet, None, ChecksumFlag.NO_TCP_CHECKSUM)
        assert decrement_ttl(packet)
        assert internet_checksum(int.from_bytes(packet[:20], "big")) == 0, packet[:20].hex()


@pytest.mark.parametrize("before, after", [
    (b"\xfe\xff", b"\x00\x00"),   # host value 0xFFFE wraps to 0
    (b"\xff\xff", b"\x01\x00"),   # host value 0xFFFF wraps to 1
    (b"\x12\x34", b"\x13\x34"),   # +1 in host (little-endian) order
])
def test_decrement_ttl_updates_the_checksum_as_windivert_does(before, after):
    packet = bytearray(_tcp_packet())
    packet[8] = 9
    packet[10:12] = before
    assert decrement_ttl(packet) is True
    assert packet[8] == 8 and bytes(packet[10:12]) == after


@pytest.mark.parametrize("ttl", [0, 1])
def test_decrement_ttl_refuses_to_reach_zero(ttl):
    packet = _ipv4_with_ttl(ttl)
    before = bytes(packet)
    assert decrement_ttl(packet) is False
    assert bytes(packet) == before


def test_decrement_ttl_ipv6_hop_limit():
    packet = bytearray(_udp6_packet(b"abc"))
    packet[7] = 2
    assert decrement_ttl(packet) is True and packet[7] == 1
    assert decrement_ttl(packet) is False and packet[7] == 1


def test_decrement_ttl_rejects_what_is_not_ip():
    assert decrement_ttl(bytearray(b"\x45" * 10)) is False
    assert decrement_ttl(bytearray(b"\x60" + bytes(30))) is False    # IPv6 shorter than its header
    assert decrement_ttl(bytearray(b"\x50" + bytes(40))) is False
    with pytest.raises(TypeError, match="bytearray"):
        decrement_ttl(bytes(_tcp_packet()))


def test_checksums_valid_says_what_calc_checksums_would_change():
    # A flag is valid exactly when recomputing that checksum leaves it as it is.
    from divertgui.engine.checksum import checksums_valid
    rng = random.Random(11)
    checked = 0
    for _ in range(3000):
        raw = packet_gen.packet(rng)
        if rng.random() < 0.5:
            fixed = bytearray(raw)
            calc_checksums(fixed)
            raw = bytes(fixed)
        if rng.random() < 0.5 and raw:
            spoiled = bytearray(raw)
            spoiled[rng.randrange(len(spoiled))] ^= 1 << rng.randrange(8)
            raw = bytes(spoiled)
        layout = parse_headers(raw)
        fixed = bytearray(raw)
        if layout is None or not calc_checksums(fixed, None, ChecksumFlag.NO_ICMP_CHECKSUM
                                                | ChecksumFlag.NO_ICMPV6_CHECKSUM):
            continue
        ip_ok, tcp_ok, udp_ok = checksums_valid(raw)
        assert ip_ok == (layout.version != 4 or fixed[10:12] == raw[10:12])
        if layout.transport in (6, 17):
            at = layout.transport_offset + (16 if layout.transport == 6 else 6)
            same = fixed[at:at + 2] == raw[at:at + 2] or (
                layout.transport == 17 and layout.version == 4 and raw[at:at + 2] == b"\0\0")
            assert (tcp_ok if layout.transport == 6 else udp_ok) == same
            assert (udp_ok if layout.transport == 6 else tcp_ok) is True
            checked += 1
    assert checked > 500
