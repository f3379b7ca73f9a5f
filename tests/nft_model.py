"""What the kernel decides of nf_tables' native rules (kernel_native's
conjunctions), for tests only: the transport protocol and offset nf_tables
finds (nft_set_pktinfo_ipv4, and for IPv6 ipv6_find_hdr with IP6_FH_F_AUTH
as nft_set_pktinfo_ipv6 calls it, net/ipv6/exthdrs_core.c), and payload
loads that fail outside the packet. A load at the transport header of a
later fragment fails in nft_payload_eval, but not in nft_payload_fast_eval,
which nf_tables runs for loads of 1, 2 or 4 bytes at an offset aligned to
their size: those read from the transport offset nf_tables keeps, which
ipv6_find_hdr leaves at 0 (the IPv6 header) for a later fragment.
tests/integration/test_kernel_prefilter.py holds this model against the
running kernel.
"""

from __future__ import annotations

from typing import NamedTuple

from divertgui.engine.filter.kernel_native import NETWORK, Conjunction
from divertgui.engine.filter.kernel_fields import compare

NEXTHDR_HOP, NEXTHDR_ROUTING, NEXTHDR_FRAGMENT, NEXTHDR_AUTH, NEXTHDR_NONE, NEXTHDR_DEST = 0, 43, 44, 51, 59, 60
# include/net/ipv6.h, ipv6_ext_hdr()
KERNEL_EXTENSION_HEADERS = {NEXTHDR_HOP, NEXTHDR_ROUTING, NEXTHDR_FRAGMENT, NEXTHDR_AUTH, NEXTHDR_NONE, NEXTHDR_DEST}
U16_MAX = 0xFFFF


class Transport(NamedTuple):
    protocol: int
    offset: int
    fragment_offset: int    # in bytes; not 0 for a later fragment


def find_transport(raw: bytes) -> Transport | None:
    """What meta l4proto and the transport payload base see; None when nf_tables finds no protocol."""
    if len(raw) < (20 if raw[0] >> 4 == 4 else 40):
        return None     # no hook holds such a packet
    if raw[0] >> 4 == 4:
        return Transport(raw[9], (raw[0] & 0x0F) * 4, (int.from_bytes(raw[6:8], "big") & 0x1FFF) * 8)
    start, nexthdr = 40, raw[6]
    while nexthdr in KERNEL_EXTENSION_HEADERS and nexthdr != NEXTHDR_NONE:
        if start + 2 > len(raw):
            return None
        if nexthdr == NEXTHDR_ROUTING and start + 4 > len(raw):
            return None
        if nexthdr == NEXTHDR_FRAGMENT:
            if start + 4 > len(raw):
                return None
            fragment_offset = int.from_bytes(raw[start + 2:start + 4], "big") & ~0x7
            if fragment_offset:
                following = raw[start]
                if following not in KERNEL_EXTENSION_HEADERS or following == NEXTHDR_NONE:
                    return Transport(following, 0, fragment_offset)
                return None
            length = 8
        elif nexthdr == NEXTHDR_AUTH:
            break   # IP6_FH_F_AUTH with target < 0: the lookup stops at AH
        else:
            length = (raw[start + 1] + 1) * 8
        nexthdr = raw[start]
        start += length
    if start > U16_MAX:
        return None
    return Transport(nexthdr, start, 0)


def _fast_load(size: int, offset: int) -> bool:
    """Whether nf_tables loads these bytes with nft_payload_fast_eval (nft_payload_select_ops)."""
    return size in (1, 2, 4) and offset % size == 0


def conjunction_accepts(conjunction: Conjunction, raw: bytes) -> bool:
    transport = find_transport(raw)
    if conjunction.protocol is not None and (transport is None or transport.protocol != conjunction.protocol):
        return False
    for test in conjunction.tests:
        if test.base == NETWORK:
            start = 0
        elif transport is None or transport.fragment_offset and not _fast_load(test.size, test.offset):
            return False
        else:
            start = transport.offset
        start += test.offset
        if start + test.size > len(raw):
            return False
        value = int.from_bytes(raw[start:start + test.size], "big")
        if test.mask is not None:
            value &= test.mask
        if not compare(test.op, value, test.value):
            return False
    return True


def accepts(conjunctions: tuple[Conjunction, ...], raw: bytes) -> bool:
    """Whether a packet meets one of the rules; asserts that it meets no more than one."""
    met = sum(conjunction_accepts(conjunction, raw) for conjunction in conjunctions)
    assert met <= 1, f"{raw.hex()} meets {met} of the rules {conjunctions}"
    return met == 1
