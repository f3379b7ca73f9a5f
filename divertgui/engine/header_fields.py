"""Every header fact, once: the protocol numbers, the IPv6 extension headers
WinDivert walks, and each header field's place (offset, size, shift, mask)
and label. The packet views, the filter compiler, the kernel prefilter, the
store's display columns and the details tree are generated from here.
"""

from __future__ import annotations

from typing import NamedTuple

IPPROTO_HOPOPTS = 0
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_AH = 51
IPPROTO_ICMPV6 = 58
IPPROTO_DSTOPTS = 60
IPPROTO_MH = 135

IPV4_HEADER_LEN = 20
IPV6_HEADER_LEN = 40
TCP_HEADER_MIN = 20
UDP_HEADER_LEN = 8
ICMP_HEADER_LEN = 8

# The IPv6 extension headers WinDivert's packet parser walks
# (WinDivertHelperParsePacketEx in dll/windivert_shared.c, which the driver
# includes), with how each one's length is read: (length byte + add) * unit.
# A fragment header is always 8 bytes, and only the first one is walked.
IPV6_EXTENSION_HEADERS = {
    IPPROTO_HOPOPTS: (1, 8),
    IPPROTO_ROUTING: (1, 8),
    IPPROTO_DSTOPTS: (1, 8),
    IPPROTO_MH: (1, 8),
    IPPROTO_AH: (2, 4),
    IPPROTO_FRAGMENT: None,
}
FRAGMENT_HEADER_LEN = 8

# The transport headers the filter language names, by their filter prefix,
# and the fewest bytes WinDivert takes as each header.
TRANSPORT_PROTOCOLS = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP, "icmp": IPPROTO_ICMP, "icmpv6": IPPROTO_ICMPV6}
TRANSPORT_HEADER_MIN = {IPPROTO_TCP: TCP_HEADER_MIN, IPPROTO_UDP: UDP_HEADER_LEN, IPPROTO_ICMP: ICMP_HEADER_LEN,
                        IPPROTO_ICMPV6: ICMP_HEADER_LEN}


class HeaderField(NamedTuple):
    """`size` bytes at `offset` of a header, read big-endian, then `>> shift & mask`."""

    offset: int
    size: int
    shift: int
    mask: int
    label: str
    kind: str = "number"       # number, flag (one bit read as a bool), address

    @property
    def whole(self) -> bool:
        """Whether the field is all of its bytes (no shift, no mask needed)."""
        return self.shift == 0 and self.mask == (1 << 8 * self.size) - 1

    @property
    def span(self) -> slice:
        """The field's bytes, from the start of its header."""
        return slice(self.offset, self.offset + self.size)


def _n(offset, size, shift=0, bits=None, label=""):
    return HeaderField(offset, size, shift, (1 << (bits if bits is not None else 8 * size)) - 1, label)


def _flag(offset, size, bit, label):
    return HeaderField(offset, size, bit, 1, label, "flag")


def _address(offset, size, label):
    return HeaderField(offset, size, 0, (1 << 8 * size) - 1, label, "address")


# Labels are the field names Wireshark's details pane shows.
IPV4 = {
    "version": _n(0, 1, 4, 4, "Version"),
    "hdr_len": _n(0, 1, 0, 4, "Header Length"),            # in 32-bit words
    "tos": _n(1, 1, label="Differentiated Services Field"),
    "dscp": _n(1, 1, 2, 6, "Differentiated Services Codepoint"),
    "ecn": _n(1, 1, 0, 2, "Explicit Congestion Notification"),
    "length": _n(2, 2, label="Total Length"),
    "id": _n(4, 2, label="Identification"),
    "flags": _n(6, 1, 5, 3, "Flags"),
    "reserved_flag": _flag(6, 1, 7, "Reserved bit"),
    "df": _flag(6, 1, 6, "Don't fragment"),
    "mf": _flag(6, 1, 5, "More fragments"),
    "frag_offset": _n(6, 2, 0, 13, "Fragment Offset"),       # in 8-byte units
    "ttl": _n(8, 1, label="Time to Live"),
    "protocol": _n(9, 1, label="Protocol"),
    "checksum": _n(10, 2, label="Header Checksum"),
    "src_addr": _address(12, 4, "Source Address"),
    "dst_addr": _address(16, 4, "Destination Address"),
}
# The MF flag and the fragment offset, in the 16 bits at the fragment offset's place: a
# packet with any of them set is a fragment.
IPV4_FRAGMENT_BITS = IPV4["frag_offset"].mask | 1 << IPV4["mf"].shift + 8
IPV6 = {
    "version": _n(0, 1, 4, 4, "Version"),
    "traffic_class": _n(0, 2, 4, 8, "Traffic Class"),
    "flow_label": _n(1, 3, 0, 20, "Flow Label"),
    "length": _n(4, 2, label="Payload Length"),
    "next_hdr": _n(6, 1, label="Next Header"),
    "hop_limit": _n(7, 1, label="Hop Limit"),
    "src_addr": _address(8, 16, "Source Address"),
    "dst_addr": _address(24, 16, "Destination Address"),
}
# IPv6's traffic class splits into DSCP and ECN as IPv4's TOS byte does:
# their shifts and masks within the traffic class value.
TRAFFIC_CLASS_DSCP, TRAFFIC_CLASS_ECN = IPV4["dscp"], IPV4["ecn"]
IPV6_EXTENSION = {
    "next_hdr": _n(0, 1, label="Next Header"),
    "hdr_ext_len": _n(1, 1, label="Length"),
}
IPV6_ROUTING = {
    "routing_type": _n(2, 1, label="Type"),
    "segments_left": _n(3, 1, label="Segments Left"),
}
IPV6_FRAGMENT = {
    "reserved": _n(1, 1, label="Reserved octet"),
    "frag_offset": _n(2, 2, 3, 13, "Offset"),                # in 8-byte units
    "mf": _flag(2, 2, 0, "More Fragments"),
    "id": _n(4, 4, label="Identification"),
}
IPV6_AUTHENTICATION = {
    "spi": _n(4, 4, label="AH SPI"),
    "sequence": _n(8, 4, label="AH Sequence"),
}
ICMP = {
    "type": _n(0, 1, label="Type"),
    "code": _n(1, 1, label="Code"),
    "checksum": _n(2, 2, label="Checksum"),
    "body": _n(4, 4, label="Rest of Header"),                # id/sequence, MTU, pointer, ... by type
}
UDP = {
    "src_port": _n(0, 2, label="Source Port"),
    "dst_port": _n(2, 2, label="Destination Port"),
    "length": _n(4, 2, label="Length"),
    "checksum": _n(6, 2, label="Checksum"),
}
TCP = {
    "src_port": _n(0, 2, label="Source Port"),
    "dst_port": _n(2, 2, label="Destination Port"),
    "seq_num": _n(4, 4, label="Sequence Number"),
    "ack_num": _n(8, 4, label="Acknowledgment Number"),
    "hdr_len": _n(12, 1, 4, 4, "Header Length"),             # in 32-bit words
    "reserved": _n(12, 1, 1, 3, "Reserved"),
    "ns": _flag(12, 1, 0, "Nonce"),
    "flags": _n(13, 1, label="Flags"),
    "cwr": _flag(13, 1, 7, "Congestion Window Reduced"),
    "ece": _flag(13, 1, 6, "ECN-Echo"),
    "urg": _flag(13, 1, 5, "Urgent"),
    "ack": _flag(13, 1, 4, "Acknowledgment"),
    "psh": _flag(13, 1, 3, "Push"),
    "rst": _flag(13, 1, 2, "Reset"),
    "syn": _flag(13, 1, 1, "Syn"),
    "fin": _flag(13, 1, 0, "Fin"),
    "window": _n(14, 2, label="Window"),
    "checksum": _n(16, 2, label="Checksum"),
    "urg_ptr": _n(18, 2, label="Urgent Pointer"),
}

# WinDivert's ipv6.FlowLabel is not the 20-bit label: it is
# ntohl((FlowLabel0 << 16) | FlowLabel1) over WINDIVERT_IPV6HDR's
# little-endian bit fields (include/windivert.h, dll/windivert_shared.c),
# which puts the label's low 16 bits in bits 16..31 and its high 4 bits in
# bits 8..11.
WINDIVERT_FLOW_LABEL = (
    (_n(2, 2, label="Flow Label, low 16 bits"), 16),
    (_n(1, 1, 0, 4, "Flow Label, high 4 bits"), 8),
)


class FilterRead(NamedTuple):
    """How a filter field's value is read from its header: the sum of each
    piece's value shifted left by its position."""

    header: str                  # ip, ipv6, tcp, udp, icmp, icmpv6
    pieces: tuple                # ((HeaderField, position), ...)

    @property
    def field(self) -> HeaderField | None:
        """The one header field read whole, or None for a composite value."""
        return self.pieces[0][0] if len(self.pieces) == 1 and self.pieces[0][1] == 0 else None

    @property
    def hi(self) -> int:
        """The largest value the read can give."""
        return sum(field.mask << position for field, position in self.pieces)


def _reads(header: str, table: dict, names: dict) -> dict:
    return {f"{header}.{name}": FilterRead(header, ((table[attr], 0),)) for name, attr in names.items()}


_ICMP_NAMES = {"Type": "type", "Code": "code", "Checksum": "checksum", "Body": "body"}

# The filter language's header fields, as WinDivert's filter evaluator reads them.
FILTER_READS = {
    **_reads("ip", IPV4, {"HdrLength": "hdr_len", "TOS": "tos", "Length": "length", "Id": "id", "DF": "df",
                          "MF": "mf", "FragOff": "frag_offset", "TTL": "ttl", "Protocol": "protocol",
                          "Checksum": "checksum", "SrcAddr": "src_addr", "DstAddr": "dst_addr"}),
    **_reads("ipv6", IPV6, {"TrafficClass": "traffic_class", "Length": "length", "NextHdr": "next_hdr",
                            "HopLimit": "hop_limit", "SrcAddr": "src_addr", "DstAddr": "dst_addr"}),
    "ipv6.FlowLabel": FilterRead("ipv6", WINDIVERT_FLOW_LABEL),
    **_reads("icmp", ICMP, _ICMP_NAMES),
    **_reads("icmpv6", ICMP, _ICMP_NAMES),
    **_reads("tcp", TCP, {"SrcPort": "src_port", "DstPort": "dst_port", "SeqNum": "seq_num", "AckNum": "ack_num",
                          "HdrLength": "hdr_len", "Urg": "urg", "Ack": "ack", "Psh": "psh", "Rst": "rst",
                          "Syn": "syn", "Fin": "fin", "Window": "window", "Checksum": "checksum",
                          "UrgPtr": "urg_ptr"}),
    **_reads("udp", UDP, {"SrcPort": "src_port", "DstPort": "dst_port", "Length": "length",
                          "Checksum": "checksum"}),
}


def _index(base: str, offset: int) -> str:
    return str(offset) if base == "0" else f"{base} + {offset}" if offset else base


def _byte_expression(base: str, offset: int, size: int) -> str:
    """The big-endian number in `size` bytes at `offset` from `base`."""
    if size == 1:
        return f"r[{_index(base, offset)}]"
    if size <= 3:
        return "(" + " | ".join(f"r[{_index(base, offset + k)}]" + (f" << {8 * (size - 1 - k)}" if k < size - 1 else "")
                                for k in range(size)) + ")"
    return f"int.from_bytes(r[{_index(base, offset)}:{_index(base, offset + size)}], 'big')"


def field_expression(field: HeaderField, base: str) -> str:
    """Python reading the field from bytes `r`, its header at `base` (an expression, "0" for the start)."""
    value = _byte_expression(base, field.offset, field.size)
    if field.shift:
        value = f"{value} >> {field.shift}"
    if ((1 << 8 * field.size) - 1) >> field.shift != field.mask:
        value = f"{value} & {field.mask}"
    return value if field.whole else f"({value})"


def reader(field: HeaderField):
    """A fast function (raw, at) -> the field's value in the header at `at` of `raw`."""
    return eval(f"lambda r, at: {field_expression(field, 'at')}")  # noqa: S307 - text built from the table


def ip_version(raw) -> int:
    """The IP version a packet's first byte gives; 0 for no bytes."""
    return raw[0] >> IPV4["version"].shift if raw else 0


# Each IP version's length field, and the bytes before what it counts: IPv4's
# Total Length counts the whole packet, IPv6's Payload Length what follows its fixed header.
IP_LENGTH = {4: (IPV4["length"], 0), 6: (IPV6["length"], IPV6_HEADER_LEN)}


def write_value(buf: bytearray, at: int, field: HeaderField, value: int) -> None:
    """Store `value` in a field that fills its bytes (no shift or mask), in the header at `at` of `buf`."""
    start = at + field.offset
    buf[start:start + field.size] = value.to_bytes(field.size, "big")


def field_value(raw, at: int, field: HeaderField) -> int:
    """The field's value in the header at `at` of `raw`."""
    start = at + field.offset
    return int.from_bytes(raw[start:start + field.size], "big") >> field.shift & field.mask


def read_value(raw, at: int, read: FilterRead) -> int:
    """A filter field's value in the header at `at` of `raw`."""
    value = 0
    for field, position in read.pieces:
        value |= field_value(raw, at, field) << position
    return value
