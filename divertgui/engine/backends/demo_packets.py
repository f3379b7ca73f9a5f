"""Packet bytes for the demo network: IPv4/IPv6 packets carrying TCP, UDP,
ICMP echo (packet_build.py) and DNS queries; and parse_segment, what a
receiving host reads back (None where its stack would discard the packet).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from divertgui.engine import header_fields as fields
from divertgui.engine.checksum import internet_checksum
from divertgui.engine.packet_build import (ACK, FIN, ICMP, ICMPV6, PSH, RST, SYN, TCP, UDP, TcpFlowBytes,
                                           echo_packet, ip_packet, tcp_packet, udp_packet)

__all__ = ["ACK", "FIN", "ICMP", "ICMPV6", "PSH", "RST", "SYN", "TCP", "UDP", "Segment", "TcpFlowBytes",
           "dns_query", "echo_packet", "ip_packet", "parse_segment", "tcp_packet", "udp_packet"]

_V4_LEN, _V6_LEN, _TCP_LEN = fields.IPV4_HEADER_LEN, fields.IPV6_HEADER_LEN, fields.TCP_HEADER_MIN
_UDP_LEN, _ICMP_LEN = fields.UDP_HEADER_LEN, fields.ICMP_HEADER_LEN
_V4_HDR_LEN, _V4_LENGTH, _V4_FRAG_OFFSET, _V4_MF, _V4_PROTOCOL = (
    fields.reader(fields.IPV4[name]) for name in ("hdr_len", "length", "frag_offset", "mf", "protocol"))
_V4_SRC, _V4_DST = fields.IPV4["src_addr"], fields.IPV4["dst_addr"]
_V6_LENGTH, _V6_NEXT_HDR = fields.reader(fields.IPV6["length"]), fields.reader(fields.IPV6["next_hdr"])
_V6_SRC, _V6_DST = fields.IPV6["src_addr"], fields.IPV6["dst_addr"]
_TCP_HDR_LEN, _TCP_FLAGS = fields.reader(fields.TCP["hdr_len"]), fields.reader(fields.TCP["flags"])
_UDP_LENGTH, _UDP_CHECKSUM = fields.reader(fields.UDP["length"]), fields.UDP["checksum"]


class Segment(NamedTuple):
    """What a receiving host reads from a packet."""

    src: bytes
    dst: bytes
    protocol: int
    sport: int          # ICMP echo: the identifier
    dport: int          # ICMP echo: the sequence number
    seq: int
    ack: int
    flags: int          # ICMP: the type
    payload: bytes


def parse_segment(raw: bytes) -> Segment | None:
    """The segment a host's stack accepts, or None when it would discard the packet."""
    n = len(raw)
    if n < _V4_LEN:
        return None
    version = raw[0] >> fields.IPV4["version"].shift
    if version == 4:
        ihl = _V4_HDR_LEN(raw, 0) * 4
        total = _V4_LENGTH(raw, 0)
        if ihl < _V4_LEN or total < ihl or total > n or _V4_FRAG_OFFSET(raw, 0) or _V4_MF(raw, 0):
            return None
        if internet_checksum(int.from_bytes(raw[:ihl], "big")) != 0:
            return None
        src, dst, protocol, body = raw[_V4_SRC.span], raw[_V4_DST.span], _V4_PROTOCOL(raw, 0), raw[ihl:total]
    elif version == 6:
        if n < _V6_LEN or _V6_LENGTH(raw, 0) + _V6_LEN > n:
            return None
        src, dst, protocol = raw[_V6_SRC.span], raw[_V6_DST.span], _V6_NEXT_HDR(raw, 0)
        body = raw[_V6_LEN:_V6_LEN + _V6_LENGTH(raw, 0)]
    else:
        return None
    odd = 256 if len(body) & 1 else 1
    if protocol == TCP:
        if len(body) < _TCP_LEN or not _TCP_LEN <= _TCP_HDR_LEN(body, 0) * 4 <= len(body):
            return None
        if internet_checksum(int.from_bytes(src + dst, "big") + TCP + len(body)
                             + int.from_bytes(body, "big") * odd) != 0:
            return None
        sport, dport, seq, ack = struct.unpack_from("!HHII", body)
        return Segment(src, dst, TCP, sport, dport, seq, ack, _TCP_FLAGS(body, 0), body[_TCP_HDR_LEN(body, 0) * 4:])
    if protocol == UDP:
        if len(body) < _UDP_LEN or _UDP_LENGTH(body, 0) != len(body):
            return None
        if body[_UDP_CHECKSUM.span] != b"\0\0" and internet_checksum(
                int.from_bytes(src + dst, "big") + UDP + len(body) + int.from_bytes(body, "big") * odd) != 0:
            return None
        sport, dport = struct.unpack_from("!HH", body)
        return Segment(src, dst, UDP, sport, dport, 0, 0, 0, body[_UDP_LEN:])
    if protocol in (ICMP, ICMPV6) and len(body) >= _ICMP_LEN:
        words = int.from_bytes(body, "big") * odd
        if protocol == ICMPV6:
            words += int.from_bytes(src + dst, "big") + ICMPV6 + len(body)
        if internet_checksum(words) != 0:
            return None
        kind, _, _, ident, seq = struct.unpack_from("!BBHHH", body)
        return Segment(src, dst, protocol, ident, seq, 0, 0, kind, body[_ICMP_LEN:])
    return None


def _dns_name(name: str) -> bytes:
    return b"".join(bytes((len(p),)) + p.encode() for p in name.split(".")) + b"\0"


def dns_query(ident: int, name: str, qtype: int) -> bytes:
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + _dns_name(name) + struct.pack("!HH", qtype, 1)
