"""Splitting a TCP segment an edit made too large to send into segments that fit.

On loopback (MTU 65536) the kernel hands over TCP segments of up to about
65,483 bytes; an edit that grows one passes what one verdict carries (or
what IP's 16-bit length allows). Cut at payload boundaries, it goes out as
several segments covering the same sequence space: the receiver's TCP
reassembles them, so the connection carries the grown bytes.
"""

from __future__ import annotations

from divertgui.engine.checksum import calc_checksums
from divertgui.engine.header_fields import IP_LENGTH, IPV4, TCP, field_value, write_value
from divertgui.engine.headers import IPPROTO_TCP, parse_headers

_FIN, _SYN, _PSH = (1 << TCP[flag].shift for flag in ("fin", "syn", "psh"))
_FLAGS = TCP["flags"]


def _payload_offset(raw, tcp_at: int) -> int:
    return tcp_at + field_value(raw, tcp_at, TCP["hdr_len"]) * 4


def split_tcp_segment(raw: bytes, limit: int, cut: bool = False) -> list[bytes] | None:
    """`raw` as TCP segments of at most `limit` bytes each, or None when it cannot be split.

    The bytes after the TCP header, up to the end of `raw` (the IP length
    field may be too small to hold them), are the payload. Each part has
    the same IP and TCP headers (options included); the first keeps the
    sequence number and IPv4 ID, each next one starts where the one before
    ends and takes the next ID; FIN and PSH are kept on the last part only;
    lengths and checksums are set. None for what is not TCP, an IP
    fragment, a SYN, a segment without payload, or headers leaving no room.
    `cut`: `raw` lacks the end of the segment the sender sent, which the
    sender sends again, FIN included: no part carries FIN.
    """
    layout = parse_headers(raw)
    if layout is None or layout.transport != IPPROTO_TCP or layout.more_fragments or layout.frag_offset:
        return None
    tcp_at = layout.transport_offset
    payload_at = _payload_offset(raw, tcp_at)
    flags = field_value(raw, tcp_at, _FLAGS)
    room = limit - payload_at
    if flags & _SYN or room <= 0 or payload_at >= len(raw):
        return None
    headers, payload = raw[:payload_at], raw[payload_at:]
    seq = field_value(raw, tcp_at, TCP["seq_num"])
    ident = field_value(raw, 0, IPV4["id"]) if layout.version == 4 else 0
    length_field, counted_from = IP_LENGTH[layout.version]
    parts = []
    for index, start in enumerate(range(0, len(payload), room)):
        part = bytearray(headers)
        part += payload[start:start + room]
        write_value(part, 0, length_field, len(part) - counted_from)
        if layout.version == 4:
            write_value(part, 0, IPV4["id"], (ident + index) & 0xFFFF)
        write_value(part, tcp_at, TCP["seq_num"], (seq + start) & 0xFFFFFFFF)
        if start + room < len(payload):
            write_value(part, tcp_at, _FLAGS, flags & ~(_FIN | _PSH))
        elif cut:
            write_value(part, tcp_at, _FLAGS, flags & ~_FIN)
        calc_checksums(part)
        parts.append(bytes(part))
    return parts



def set_oversized_tcp_payload(packet, payload: bytes) -> bool:
    """Give TCP `packet` a payload too large for IP's length field (that field is left at its
    most), to be split when sent; False, and nothing changed, when the packet is not TCP."""
    layout = parse_headers(packet.raw)
    if layout is None or layout.transport != IPPROTO_TCP:
        return False
    raw = bytearray(packet.raw)
    payload_at = _payload_offset(raw, layout.transport_offset)
    raw[payload_at:] = payload
    length_field = IP_LENGTH[layout.version][0]
    write_value(raw, 0, length_field, length_field.mask)
    packet.raw = raw
    return True
