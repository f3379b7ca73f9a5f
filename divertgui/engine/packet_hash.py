"""WinDivertHelperHashPacket, bit for bit: a 64-bit xxHash specialised to one
round over 32 bytes taken from the IP header and the first transport-header
words, seeded by the caller and padded with fixed constants (SHA-2 IVs).

Words are read little-endian because the reference reads them as native
integers on x86.
"""

from __future__ import annotations

import struct

from .header_fields import IPV4, IPV4_HEADER_LEN, IPV6, IPV6_HEADER_LEN, TRANSPORT_HEADER_MIN, reader
from .headers import parse_headers

_MASK = 0xFFFFFFFFFFFFFFFF
_PRIME1 = 11400714785074694791
_PRIME2 = 14029467366897019727
_PRIME3 = 1609587929392839161
_PRIME4 = 9650029242287828579
_PADDING = (
    0x428A2F9871374491, 0xB5C0FBCFE9B5DBA5, 0x3956C25B59F111F1,
    0x923F82A4AB1C5ED5, 0xD807AA9812835B01, 0x243185BE550C7DC3,
    0x72BE5D7480DEB1FE, 0x9BDC06A7C19BF174, 0xE49B69C1EFBE4786,
)
_u64 = struct.Struct("<Q").unpack_from
_u32 = struct.Struct("<I").unpack_from
_IPV4_LENGTH = reader(IPV4["length"])
_IPV6_LENGTH = reader(IPV6["length"])
_FIXED_IP_HEADER = {4: IPV4_HEADER_LEN, 6: IPV6_HEADER_LEN}
# The lanes v2, v3, v4 and v[0]..v[3] that header words fill.
_LANES = 7


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _MASK


def _round(acc: int, value: int) -> int:
    acc = (acc + value * _PRIME2) & _MASK
    return (_rotl(acc, 31) * _PRIME1) & _MASK


def _merge_round(acc: int, value: int) -> int:
    acc ^= _round(0, value)
    return (acc * _PRIME1 + _PRIME4) & _MASK


def _avalanche(h: int) -> int:
    h ^= h >> 33
    h = (h * _PRIME2) & _MASK
    h ^= h >> 29
    h = (h * _PRIME3) & _MASK
    return h ^ (h >> 32)


def _declared_length(raw: bytes, version: int) -> int:
    if version == 4:
        return _IPV4_LENGTH(raw, 0)
    return _IPV6_LENGTH(raw, 0) + IPV6_HEADER_LEN


def hash_packet(raw: bytes, seed: int = 0) -> int:
    """The reference's 64-bit packet hash; 0 when `raw` is not an IP packet.

    Unlike the filter, the hash refuses a packet shorter than its IP length
    field says (the reference's WinDivertHelperParsePacket does).
    """
    layout = parse_headers(raw)
    if layout is None or layout.ip_total_len < _declared_length(raw, layout.version):
        return 0
    return layout_hash(raw, layout, seed)


def _lanes(raw, start: int, length: int) -> list[int]:
    """A fixed header as the reference reads it: 64-bit words, then a 32-bit one if 4 bytes are left."""
    end = start + length
    lanes = [_u64(raw, at)[0] for at in range(start, end - 7, 8)]
    if length % 8:
        lanes.append(_u32(raw, end - 4)[0])
    return lanes


def layout_hash(raw: bytes, layout, seed: int) -> int:
    """The hash of a packet already parsed; the filter's random8/16/32 use it
    as is, without hash_packet's length check (the reference does the same)."""
    if layout is None:
        return 0
    seed &= _MASK
    # The fixed IP header, then the fixed transport header, fill the lanes v2, v3,
    # v4, v[0]..v[3] in turn; lanes left over take the seed. Only IPv6 with TCP has
    # one lane more than there are: the reference folds it into v2's upper half.
    lanes = _lanes(raw, 0, _FIXED_IP_HEADER[layout.version])
    if layout.transport:
        lanes += _lanes(raw, layout.transport_offset, TRANSPORT_HEADER_MIN[layout.transport])
    filled = [lane ^ _PADDING[k + 1] for k, lane in enumerate(lanes[:_LANES])]
    filled += [seed ^ _PADDING[k + 1] for k in range(len(filled), _LANES)]
    v2, v3, v4, *v = filled
    for extra in lanes[_LANES:]:
        v2 ^= (extra << 32) & _MASK
    v1 = seed ^ _PADDING[0]

    v1 = _round(v[0], v1)
    v2 = _round(v[1], v2)
    v3 = _round(v[2], v3)
    v4 = _round(v[3], v4)
    h = (_rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)) & _MASK
    h = _merge_round(h, v1)
    h = _merge_round(h, v2)
    h = _merge_round(h, v3)
    h = _merge_round(h, v4)
    return _avalanche((h + 32) & _MASK)
