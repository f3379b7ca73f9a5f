"""Where the headers of a raw IPv4/IPv6 packet are, decided exactly as WinDivert's
packet parser decides it (the filter language and the packet hash depend on it)."""

from __future__ import annotations

from typing import NamedTuple


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


def parse_headers(raw: bytes) -> HeaderLayout | None:
    """None when `raw` is not a parsable IPv4 or IPv6 packet."""
    raise NotImplementedError
