"""Where the headers of a raw IPv4/IPv6 packet are, decided exactly as WinDivert's
packet parser decides it (the filter language and the packet hash depend on it)."""

from __future__ import annotations

from typing import NamedTuple

from .header_fields import (  # noqa: F401 - the protocol numbers are also read from here
    FRAGMENT_HEADER_LEN, ICMP_HEADER_LEN, IPPROTO_AH, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS,
    IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_MH, IPPROTO_ROUTING, IPPROTO_TCP, IPPROTO_UDP, IPV4_HEADER_LEN,
    IPV4, IPV6, IPV6_EXTENSION, IPV6_EXTENSION_HEADERS, IPV6_FRAGMENT, IPV6_HEADER_LEN, TCP, TCP_HEADER_MIN,
    UDP_HEADER_LEN, field_expression, ip_version, reader,
)

_IPV4_HDR_LEN, _IPV4_LENGTH, _IPV4_PROTOCOL, _IPV4_FRAG_OFFSET, _IPV4_MF = (
    reader(IPV4[name]) for name in ("hdr_len", "length", "protocol", "frag_offset", "mf"))
_IPV6_LENGTH, _IPV6_NEXT_HDR = reader(IPV6["length"]), reader(IPV6["next_hdr"])
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
    version = ip_version(raw)
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
        found: list = []
        protocol, offset, fragment, frag_offset, more_fragments = \
            walk_extension_headers(raw, _IPV6_NEXT_HDR(raw, 0), total, found)
        ext_headers = tuple(found)
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


def extension_walk_lines(indent: str, collect: bool = False) -> list[str]:
    """Python that walks the extension headers of bytes `r` ending at `e`, from
    next-header value `P` at offset `h` (with `Fr` False, `O` 0, `M` False), and
    leaves `P`, `h`, `Fr`, `O` and `M` as the walk ends; with `collect`, each
    header walked is appended to `found` as (protocol, offset, length). The one
    walk, inlined where filters are compiled and in walk_extension_headers."""
    by_length: dict[tuple[int, int], list[int]] = {}
    for protocol, rule in IPV6_EXTENSION_HEADERS.items():
        if rule is not None:
            by_length.setdefault(rule, []).append(protocol)
    extensions = "{" + ", ".join(str(p) for p in sorted(IPV6_EXTENSION_HEADERS)) + "}"
    lines = [f"while e - h >= 2 and P in {extensions}:"]
    for i, ((add, unit), protocols) in enumerate(sorted(by_length.items())):
        lines += [f"    {'if' if i == 0 else 'elif'} P in {tuple(sorted(protocols))}:",
                  f"        k = ({field_expression(IPV6_EXTENSION['hdr_ext_len'], 'h')} + {add}) * {unit}"]
    lines += ["    elif Fr:", "        break", "    else:", f"        k = {FRAGMENT_HEADER_LEN}",
              "    if k > e - h:", "        break"]
    if collect:
        lines += ["    if found is not None:", "        found.append((P, h, k))"]
    lines += [f"    if P == {IPPROTO_FRAGMENT}:",
              f"        Fr, O, M = True, {field_expression(IPV6_FRAGMENT['frag_offset'], 'h')}, "
              f"bool({field_expression(IPV6_FRAGMENT['mf'], 'h')})",
              f"    P = {field_expression(IPV6_EXTENSION['next_hdr'], 'h')}",
              "    h += k",
              "    if O:",
              "        break"]
    return [indent + line for line in lines]


def _compile_walk():
    source = "\n".join(["def walk(r, P, e, found=None):",
                         f"    h, Fr, O, M = {IPV6_HEADER_LEN}, False, 0, False",
                         *extension_walk_lines("    ", collect=True),
                         "    return P, h, Fr, O, M", ""])
    namespace: dict = {}
    exec(compile(source, "<extension header walk>", "exec"), namespace)  # noqa: S102 - built from the table
    walk = namespace["walk"]
    walk.__doc__ = """(next protocol, offset after the headers walked, fragment header seen, its offset,
    its more-fragments bit) for an IPv6 packet whose first next-header value is P and whose
    bytes end at e; `found`, a list, gets (protocol, offset, length) of each header walked.

    The extension headers WinDivert walks (header_fields.IPV6_EXTENSION_HEADERS). A header
    that does not fit in the packet ends the walk with the protocol still naming it; a
    non-first fragment ends it with the fragment header's next-header value and no
    transport header; a second fragment header is not walked into."""
    return walk


walk_extension_headers = _compile_walk()
