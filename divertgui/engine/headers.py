"""Where the headers of a raw IPv4/IPv6 packet are, decided exactly as WinDivert's
packet parser decides it (the filter language and the packet hash depend on it)."""

from __future__ import annotations

from typing import NamedTuple

from .header_fields import (  # noqa: F401 - the protocol numbers are also read from here
    FRAGMENT_HEADER_LEN, ICMP_HEADER_LEN, IPPROTO_AH, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS,
    IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_MH, IPPROTO_ROUTING, IPPROTO_TCP, IPPROTO_UDP, IPV4_HEADER_LEN,
    IPV4, IPV6, IPV6_EXTENSION, IPV6_EXTENSION_HEADERS, IPV6_FRAGMENT, IPV6_HEADER_LEN, TCP, TCP_HEADER_MIN,
    UDP_HEADER_LEN, reader,
)

_IPV4_HDR_LEN, _IPV4_LENGTH, _IPV4_PROTOCOL, _IPV4_FRAG_OFFSET, _IPV4_MF = (
    reader(IPV4[name]) for name in ("hdr_len", "length", "protocol", "frag_offset", "mf"))
_IPV6_LENGTH, _IPV6_NEXT_HDR = reader(IPV6["length"]), reader(IPV6["next_hdr"])
_EXTENSION_NEXT_HDR, _EXTENSION_LENGTH = reader(IPV6_EXTENSION["next_hdr"]), reader(IPV6_EXTENSION["hdr_ext_len"])
_FRAGMENT_OFFSET, _FRAGMENT_MF = reader(IPV6_FRAGMENT["frag_offset"]), reader(IPV6_FRAGMENT["mf"])
_TCP_HDR_LEN = reader(TCP["hdr_len"])


class HeaderLayout(NamedTuple):
    """Offsets into the raw bytes; -1 where a header is absent."""

    version: int            # 4 or 6
    ip_header_len: int      # IPv4 HdrLength*4, IPv6 40
    ip_total_len: int       # bytes of this IP packet (IPv4 Length, IPv6 Length+40)
    protocol: int           # transport protocol after any IPv6 extension headers
    fragment: bool          # IPv4 MF/offset or an IPv6 fragment header
    frag_offset: int        # fragment offset in 8-byte units (0 for the first fragment)
    more_fragments: bool
    ext_headers: tuple      # IPv6 extension headers: ((next_header_value_of_this_header, offset, length), ...)
    transport_offset: int   # TCP/UDP/ICMP/ICMPv6 header, -1 when absent or not parsable
    transport_len: int      # that header's length as parsed (TCP: HdrLength*4 capped to the data)
    payload_offset: int     # first byte after the transport header (or after the IP headers)
    payload_len: int
    # Which header sits at transport_offset: IPPROTO_TCP/UDP/ICMP/ICMPV6, 0 when none.
    transport: int = 0


def parse_headers(raw: bytes) -> HeaderLayout | None:
    """None when `raw` is not a parsable IPv4 or IPv6 packet.

    `ip_total_len` is the smaller of the header's length field and the bytes
    actually present: the reference tolerates a length field larger than the
    data, and ignores bytes beyond a smaller one.
    """
    size = len(raw)
    if size < 1:
        return None
    version = raw[0] >> 4
    if version == 4:
        if size < IPV4_HEADER_LEN:
            return None
        header_len = _IPV4_HDR_LEN(raw, 0) * 4
        length_field = _IPV4_LENGTH(raw, 0)
        if header_len < IPV4_HEADER_LEN or size < header_len or length_field < header_len:
            return None
        total = min(length_field, size)
        protocol = _IPV4_PROTOCOL(raw, 0)
        frag_offset = _IPV4_FRAG_OFFSET(raw, 0)
        more_fragments = bool(_IPV4_MF(raw, 0))
        fragment = more_fragments or frag_offset != 0
        offset = header_len
        ext_headers = ()
    elif version == 6:
        if size < IPV6_HEADER_LEN:
            return None
        header_len = IPV6_HEADER_LEN
        total = min(_IPV6_LENGTH(raw, 0) + IPV6_HEADER_LEN, size)
        protocol, offset, fragment, frag_offset, more_fragments, ext_headers = \
            walk_extension_headers(raw, _IPV6_NEXT_HDR(raw, 0), total)
    else:
        return None

    transport, transport_len = 0, 0
    remaining = total - offset
    if frag_offset == 0:
        if protocol == IPPROTO_TCP:
            if remaining >= TCP_HEADER_MIN:
                declared = _TCP_HDR_LEN(raw, offset) * 4
                if declared >= TCP_HEADER_MIN:
                    transport, transport_len = IPPROTO_TCP, min(declared, remaining)
        elif protocol == IPPROTO_UDP:
            if remaining >= UDP_HEADER_LEN:
                transport, transport_len = IPPROTO_UDP, UDP_HEADER_LEN
        elif protocol == IPPROTO_ICMP:
            if version == 4 and remaining >= ICMP_HEADER_LEN:
                transport, transport_len = IPPROTO_ICMP, ICMP_HEADER_LEN
        elif protocol == IPPROTO_ICMPV6:
            if version == 6 and remaining >= ICMP_HEADER_LEN:
                transport, transport_len = IPPROTO_ICMPV6, ICMP_HEADER_LEN
    transport_offset = offset if transport else -1
    payload_offset = offset + transport_len
    return HeaderLayout(
        version, header_len, total, protocol, fragment, frag_offset, more_fragments,
        ext_headers, transport_offset, transport_len, payload_offset, total - payload_offset,
        transport)


def walk_extension_headers(raw: bytes, protocol: int, total: int):
    """Walk the extension headers WinDivert walks (header_fields.IPV6_EXTENSION_HEADERS).

    A header that does not fit in the packet ends the walk with `protocol`
    still naming it; a non-first fragment ends it with the fragment header's
    next-header value and no transport header; a second fragment header is
    not walked into.
    """
    offset = IPV6_HEADER_LEN
    fragment, frag_offset, more_fragments = False, 0, False
    ext_headers = []
    while total - offset >= 2 and protocol in IPV6_EXTENSION_HEADERS:
        rule = IPV6_EXTENSION_HEADERS[protocol]
        if rule is None:
            if fragment:
                break
            length = FRAGMENT_HEADER_LEN
        else:
            add, unit = rule
            length = (_EXTENSION_LENGTH(raw, offset) + add) * unit
        if length > total - offset:
            break
        ext_headers.append((protocol, offset, length))
        if protocol == IPPROTO_FRAGMENT:
            fragment = True
            frag_offset = _FRAGMENT_OFFSET(raw, offset)
            more_fragments = bool(_FRAGMENT_MF(raw, offset))
        protocol = _EXTENSION_NEXT_HDR(raw, offset)
        offset += length
        if frag_offset != 0:
            break
    return protocol, offset, fragment, frag_offset, more_fragments, tuple(ext_headers)
