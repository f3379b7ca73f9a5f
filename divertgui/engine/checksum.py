"""WinDivert's checksum helpers: WinDivertHelperCalcChecksums and
WinDivertHelperDecrementTTL, with the same results bit for bit.

Both edit the packet in place, as WinDivert does, so they take a bytearray
(or a writable memoryview) and return WinDivert's BOOL as a bool.
"""

from __future__ import annotations

import enum

import numpy

from divertgui.engine.address import Address
from divertgui.engine.header_fields import (
    ICMP, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, IPV4, IPV4_HEADER_LEN, IPV6, IPV6_HEADER_LEN, TCP,
    TCP_HEADER_MIN, UDP, UDP_HEADER_LEN,
)
from divertgui.engine.headers import parse_headers


class ChecksumFlag(enum.IntFlag):
    """Which checksums calc_checksums leaves alone; WinDivert's WINDIVERT_HELPER_NO_* values."""

    NO_IP_CHECKSUM = 1
    NO_ICMP_CHECKSUM = 2
    NO_ICMPV6_CHECKSUM = 4
    NO_TCP_CHECKSUM = 8
    NO_UDP_CHECKSUM = 16


_TCP, _UDP, _ICMP, _ICMPV6 = IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_ICMPV6
# Plain ints: IntFlag arithmetic costs more than the checksum of a small packet.
_NO_IP = int(ChecksumFlag.NO_IP_CHECKSUM)
_SKIP_FLAG = {
    _TCP: int(ChecksumFlag.NO_TCP_CHECKSUM),
    _UDP: int(ChecksumFlag.NO_UDP_CHECKSUM),
    _ICMP: int(ChecksumFlag.NO_ICMP_CHECKSUM),
    _ICMPV6: int(ChecksumFlag.NO_ICMPV6_CHECKSUM),
}
_CHECKSUM_AT = {_TCP: TCP["checksum"].offset, _UDP: UDP["checksum"].offset, _ICMP: ICMP["checksum"].offset,
                _ICMPV6: ICMP["checksum"].offset}

# Offsets read per packet, taken from the header table once.
_VERSION_SHIFT = IPV4["version"].shift
_V4_HDR_LEN_MASK = IPV4["hdr_len"].mask
_V4_LENGTH = IPV4["length"].offset
_V4_FRAGMENT = IPV4["frag_offset"].offset
# The MF flag and the fragment offset, in the 16 bits at _V4_FRAGMENT.
_V4_FRAGMENT_BITS = IPV4["frag_offset"].mask | 1 << IPV4["mf"].shift + 8
_V4_TTL = IPV4["ttl"].offset
_V4_PROTOCOL = IPV4["protocol"].offset
_V4_CHECKSUM = IPV4["checksum"].offset
_V4_ADDRESSES = slice(IPV4["src_addr"].offset, IPV4["dst_addr"].offset + IPV4["dst_addr"].size)
_V6_LENGTH = IPV6["length"].offset
_V6_NEXT_HDR = IPV6["next_hdr"].offset
_V6_HOP_LIMIT = IPV6["hop_limit"].offset
_V6_ADDRESSES = slice(IPV6["src_addr"].offset, IPV6["dst_addr"].offset + IPV6["dst_addr"].size)
_TCP_HDR_LEN = TCP["hdr_len"].offset
_TCP_HDR_LEN_SHIFT = TCP["hdr_len"].shift
_UDP_CHECKSUM = UDP["checksum"].offset


def internet_checksum(words_sum: int) -> int:
    """The one's-complement checksum of data whose big-endian value is `words_sum`.

    The one's-complement sum of 16-bit words is that number modulo 0xFFFF
    (2**16 is 1 modulo 0xFFFF), which lets int.from_bytes do the adding in C.
    A zero sum and a non-zero multiple of 0xFFFF fold differently, as in
    WinDivert's end-around carry.
    """
    rest = words_sum % 0xFFFF
    if rest == 0:
        return 0 if words_sum else 0xFFFF
    return 0xFFFF - rest


# From this size on, numpy's sum of 16-bit words beats a big-int remainder.
_NUMPY_FROM = 768
_BIG_ENDIAN_WORDS = numpy.dtype(">u2")


def _words(view) -> int:
    """A number congruent to the sum of the 16-bit words of `view` modulo 0xFFFF, 0 only for zeros."""
    size = len(view)
    if size < _NUMPY_FROM:
        value = int.from_bytes(view, "big")
        # An odd length is padded with one zero byte.
        return value << 8 if size & 1 else value
    even = size & ~1
    total = int(numpy.frombuffer(view[:even], dtype=_BIG_ENDIAN_WORDS).sum(dtype=numpy.uint64))
    return total + (view[even] << 8 if size & 1 else 0)


def calc_checksums(packet: bytearray | memoryview, address: Address | None = None,
                   flags: int = 0) -> bool:
    """Recompute the IPv4, ICMP, ICMPv6, TCP and UDP checksums of `packet` in place.

    Returns False, as WinDivert does, when the packet does not parse or when
    its transport checksum cannot be computed: a fragment, an IP length
    beyond the bytes present, or a TCP header running past the end of the
    buffer (WinDivert would sum whatever memory follows). The IPv4 header
    checksum is still fixed in those cases. `address.ip_checksum/tcp_checksum/udp_checksum`
    are set when that checksum was computed; `flags` are ChecksumFlag values.
    """
    if isinstance(packet, (bytes, str)):
        raise TypeError("calc_checksums edits the packet in place: pass a bytearray, not bytes")
    layout = parse_headers(packet)
    if layout is None:
        return False
    with memoryview(packet) as view:
        if layout.version == 4 and not flags & _NO_IP:
            view[_V4_CHECKSUM:_V4_CHECKSUM + 2] = b"\0\0"
            view[_V4_CHECKSUM:_V4_CHECKSUM + 2] = internet_checksum(
                int.from_bytes(view[:layout.ip_header_len], "big")).to_bytes(2, "big")
            if address is not None:
                address.ip_checksum = True

        protocol = layout.transport
        if not protocol:
            return True
        start = layout.transport_offset
        if flags & _SKIP_FLAG[layout.transport]:
            return True
        if layout.more_fragments or layout.frag_offset or _length_field(view, layout) > len(packet):
            return False

        if protocol == _TCP:
            header_len = (view[start + _TCP_HDR_LEN] >> _TCP_HDR_LEN_SHIFT) * 4
        else:
            header_len = UDP_HEADER_LEN
        length = layout.payload_len + header_len
        end = start + length
        if end > len(packet):
            return False
        at = start + _CHECKSUM_AT[protocol]
        view[at:at + 2] = b"\0\0"
        total = _words(view[start:end])
        if protocol != _ICMP:
            if layout.version == 4:
                total += int.from_bytes(view[_V4_ADDRESSES], "big")
            else:
                total += int.from_bytes(view[_V6_ADDRESSES], "big")
            total += protocol + length
        checksum = internet_checksum(total)
        if protocol == _UDP and checksum == 0:
            # 0 means "no checksum" in UDP.
            checksum = 0xFFFF
        view[at:at + 2] = checksum.to_bytes(2, "big")
    if address is not None:
        if protocol == _TCP:
            address.tcp_checksum = True
        elif protocol == _UDP:
            address.udp_checksum = True
    return True


def checksums_valid(raw: bytes) -> tuple[bool, bool, bool]:
    """(ip, tcp, udp): whether each checksum of `raw` is correct, as the
    WINDIVERT_ADDRESS flags report it ("Set to 1 if the ... checksum is
    valid"); a checksum the packet does not have, or that cannot be computed
    (a fragment), counts as valid.
    """
    quick = _quick_check(raw)
    if quick is not None:
        return quick
    fixed = bytearray(raw)
    calc_checksums(fixed, None, _SKIP_FLAG[_ICMP] | _SKIP_FLAG[_ICMPV6])
    if fixed == raw:
        return True, True, True
    ip_ok = raw[0] >> _VERSION_SHIFT != 4 or fixed[_V4_CHECKSUM:_V4_CHECKSUM + 2] == raw[_V4_CHECKSUM:_V4_CHECKSUM + 2]
    layout = parse_headers(raw)
    protocol = layout.transport if layout is not None else 0
    if protocol not in (_TCP, _UDP):
        return ip_ok, True, True
    at = layout.transport_offset + _CHECKSUM_AT[protocol]
    ok = fixed[at:at + 2] == raw[at:at + 2] or (protocol == _UDP and layout.version == 4 and raw[at:at + 2] == b"\0\0")
    return ip_ok, ok or protocol != _TCP, ok or protocol != _UDP


def _quick_check(raw: bytes) -> tuple[bool, bool, bool] | None:
    """checksums_valid of an unfragmented TCP/UDP packet without IPv6
    extension headers, whose lengths agree with its size; None otherwise.

    A correct checksum makes the one's-complement sum of what it covers all
    ones: a non-zero multiple of 0xFFFF (see internet_checksum).
    """
    size = len(raw)
    if size < IPV4_HEADER_LEN + TCP_HEADER_MIN:
        return None
    first = raw[0]
    version = first >> _VERSION_SHIFT
    if version == 4:
        start = (first & _V4_HDR_LEN_MASK) * 4
        protocol = raw[_V4_PROTOCOL]
        if (start < IPV4_HEADER_LEN or (raw[_V4_FRAGMENT] << 8 | raw[_V4_FRAGMENT + 1]) & _V4_FRAGMENT_BITS
                or (raw[_V4_LENGTH] << 8 | raw[_V4_LENGTH + 1]) != size):
            return None
        ip_ok = int.from_bytes(raw[:start], "big") % 0xFFFF == 0
        pseudo = int.from_bytes(raw[_V4_ADDRESSES], "big")
    elif version == 6:
        start, protocol = IPV6_HEADER_LEN, raw[_V6_NEXT_HDR]
        if (raw[_V6_LENGTH] << 8 | raw[_V6_LENGTH + 1]) + IPV6_HEADER_LEN != size:
            return None
        ip_ok = True
        pseudo = int.from_bytes(raw[_V6_ADDRESSES], "big")
    else:
        return None
    length = size - start
    if length < TCP_HEADER_MIN:
        return None
    if protocol == _TCP:
        if not TCP_HEADER_MIN <= (raw[start + _TCP_HDR_LEN] >> _TCP_HDR_LEN_SHIFT) * 4 <= length:
            return None
        ok = (_words(raw[start:]) + pseudo + _TCP + length) % 0xFFFF == 0
        return ip_ok, ok, True
    if protocol != _UDP:
        return None
    if version == 4 and not raw[start + _UDP_CHECKSUM] and not raw[start + _UDP_CHECKSUM + 1]:
        return ip_ok, True, True
    return ip_ok, True, (_words(raw[start:]) + pseudo + _UDP + length) % 0xFFFF == 0


def _length_field(view, layout) -> int:
    if layout.version == 4:
        return view[_V4_LENGTH] << 8 | view[_V4_LENGTH + 1]
    return (view[_V6_LENGTH] << 8 | view[_V6_LENGTH + 1]) + IPV6_HEADER_LEN



def decrement_ttl(packet: bytearray | memoryview) -> bool:
    """WinDivertHelperDecrementTTL: decrement the IPv4 TTL or IPv6 hop limit in place.

    Returns False, leaving the packet unchanged, when the TTL is 1 or 0 (the
    packet would have to be dropped) or the bytes are not IPv4/IPv6. The IPv4
    checksum is updated incrementally (RFC 1624), exactly as WinDivert does it.
    """
    if isinstance(packet, (bytes, str)):
        raise TypeError("decrement_ttl edits the packet in place: pass a bytearray, not bytes")
    if len(packet) < IPV4_HEADER_LEN:
        return False
    version = packet[0] >> _VERSION_SHIFT
    if version == 4:
        if packet[_V4_TTL] <= 1:
            return False
        packet[_V4_TTL] -= 1
        # WinDivert adds 1 to the checksum as a little-endian host number,
        # which is +0x0100 in network order: the TTL's weight in its word.
        host = packet[_V4_CHECKSUM] | packet[_V4_CHECKSUM + 1] << 8
        host = host - 0xFFFE if host >= 0xFFFE else host + 1
        packet[_V4_CHECKSUM] = host & 0xFF
        packet[_V4_CHECKSUM + 1] = host >> 8
        return True
    if version == 6:
        if len(packet) < IPV6_HEADER_LEN or packet[_V6_HOP_LIMIT] <= 1:
            return False
        packet[_V6_HOP_LIMIT] -= 1
        return True
    return False
