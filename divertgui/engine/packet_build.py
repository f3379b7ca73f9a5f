"""IPv4 and IPv6 packets built from the header table: TCP segments, UDP
datagrams, ICMP echo, and IP around any body, with their checksums
computed as they are packed. The demo network and the replies to diverted
packets (replies.py) are made of these."""

from __future__ import annotations

import struct

from divertgui.engine import header_fields as fields
from divertgui.engine.checksum import internet_checksum

TCP, UDP, ICMP, ICMPV6 = fields.IPPROTO_TCP, fields.IPPROTO_UDP, fields.IPPROTO_ICMP, fields.IPPROTO_ICMPV6
FIN, SYN, RST, PSH, ACK = (1 << fields.TCP[flag].shift for flag in ("fin", "syn", "rst", "psh", "ack"))
_V4_LEN, _V6_LEN, _TCP_LEN = fields.IPV4_HEADER_LEN, fields.IPV6_HEADER_LEN, fields.TCP_HEADER_MIN
_UDP_LEN, _ICMP_LEN = fields.UDP_HEADER_LEN, fields.ICMP_HEADER_LEN

# Checksums are sums of 16-bit words modulo 0xFFFF, and 2**16 is 1 modulo
# 0xFFFF: a field wider than a word may be added as one number, and a
# header's words need not be packed before they are summed.

_IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
_IPV6_HEADER = struct.Struct("!IHBB16s16s")
_TCP_HEADER = struct.Struct("!HHIIBBHHH")
_UDP_HEADER = struct.Struct("!HHHH")
_ECHO_HEADER = struct.Struct("!BBHHH")
# The headers built: IPv4 without options and with DF set, TCP without options.
_V4_FIRST_BYTE = 4 << fields.IPV4["version"].shift | _V4_LEN // 4
_V4_DF = 1 << fields.IPV4["df"].shift + 8           # in the 16-bit flags and fragment offset word
_V6_FIRST_WORD = 6 << fields.IPV6["version"].shift + 24
_TCP_OFFSET_BYTE = _TCP_LEN // 4 << fields.TCP["hdr_len"].shift
_IPV4_FIXED_WORDS = (_V4_FIRST_BYTE << 8) + _V4_DF   # version/IHL/TOS and the DF flag


def _fold(words: int) -> int:
    """internet_checksum of a sum known not to be zero."""
    rest = words % 0xFFFF
    return 0xFFFF - rest if rest else 0


def _payload_words(payload: bytes) -> int:
    # Data after an even-length header: an odd length is padded with one zero byte.
    return int.from_bytes(payload, "big") << 8 if len(payload) & 1 else int.from_bytes(payload, "big")


def ip_packet(src: bytes, dst: bytes, protocol: int, segment: bytes, ident: int = 0, ttl: int = 64) -> bytes:
    if len(src) == 4:
        total = _V4_LEN + len(segment)
        ident &= 0xFFFF
        checksum = _fold(_IPV4_FIXED_WORDS + total + ident + (ttl << 8) + protocol + int.from_bytes(src + dst, "big"))
        return _IPV4_HEADER.pack(_V4_FIRST_BYTE, 0, total, ident, _V4_DF, ttl, protocol, checksum, src, dst) + segment
    return _IPV6_HEADER.pack(_V6_FIRST_WORD, len(segment), protocol, ttl, src, dst) + segment


def tcp_packet(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
               payload: bytes = b"", window: int = 64240, ident: int = 0) -> bytes:
    seq &= 0xFFFFFFFF
    ack &= 0xFFFFFFFF
    words = (int.from_bytes(src + dst, "big") + TCP + _TCP_LEN + len(payload) + sport + dport + seq + ack
             + (_TCP_OFFSET_BYTE << 8) + flags + window + _payload_words(payload))
    header = _TCP_HEADER.pack(sport, dport, seq, ack, _TCP_OFFSET_BYTE, flags, window, _fold(words), 0)
    return ip_packet(src, dst, TCP, header + payload, ident)


class TcpFlowBytes:
    """tcp_packet() for one direction of one connection, with the sums of its fixed fields done once."""

    def __init__(self, src: bytes, dst: bytes, sport: int, dport: int, window: int = 64240) -> None:
        self.src, self.dst, self.sport, self.dport, self.window = src, dst, sport, dport, window
        addresses = int.from_bytes(src + dst, "big")
        self.v4 = len(src) == 4
        self.tcp_words = addresses + TCP + _TCP_LEN + sport + dport + (_TCP_OFFSET_BYTE << 8) + window
        self.ip_words = _IPV4_FIXED_WORDS + (64 << 8) + TCP + addresses

    def packet(self, seq: int, ack: int, flags: int, payload: bytes, ident: int) -> bytes:
        words = self.tcp_words + len(payload) + seq + ack + flags + _payload_words(payload)
        segment = _TCP_HEADER.pack(self.sport, self.dport, seq, ack, _TCP_OFFSET_BYTE, flags, self.window,
                                   _fold(words), 0)
        if self.v4:
            total = _V4_LEN + _TCP_LEN + len(payload)
            ident &= 0xFFFF
            header = _IPV4_HEADER.pack(_V4_FIRST_BYTE, 0, total, ident, _V4_DF, 64, TCP,
                                       _fold(self.ip_words + total + ident), self.src, self.dst)
        else:
            header = _IPV6_HEADER.pack(_V6_FIRST_WORD, _TCP_LEN + len(payload), TCP, 64, self.src, self.dst)
        return header + segment + payload


def udp_packet(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes, ident: int = 0) -> bytes:
    length = _UDP_LEN + len(payload)
    words = int.from_bytes(src + dst, "big") + UDP + 2 * length + sport + dport + _payload_words(payload)
    # A UDP checksum of zero means "none": a computed zero is sent as 0xFFFF.
    checksum = _fold(words) or 0xFFFF
    return ip_packet(src, dst, UDP, _UDP_HEADER.pack(sport, dport, length, checksum) + payload, ident)


def echo_packet(src: bytes, dst: bytes, reply: bool, ident: int, seq: int, payload: bytes) -> bytes:
    if len(src) == 4:
        kind = 0 if reply else 8
        checksum = internet_checksum((kind << 8) + ident + seq + _payload_words(payload))
        return ip_packet(src, dst, ICMP, _ECHO_HEADER.pack(kind, 0, checksum, ident, seq) + payload, ident)
    kind = 129 if reply else 128
    words = (int.from_bytes(src + dst, "big") + ICMPV6 + _ICMP_LEN + len(payload) + (kind << 8) + ident + seq
             + _payload_words(payload))
    return ip_packet(src, dst, ICMPV6, _ECHO_HEADER.pack(kind, 0, _fold(words), ident, seq) + payload)
