"""Splitting a TCP segment an edit made too large to send into segments that fit.

On loopback (MTU 65536) the kernel hands over TCP segments of up to about
65,483 bytes; an edit that grows one passes what one verdict carries (or
what IP's 16-bit length allows). Cut at payload boundaries, it goes out as
several segments covering the same sequence space: the receiver's TCP
reassembles them, so the connection carries the grown bytes.
"""

from __future__ import annotations

from divertgui.engine.checksum import calc_checksums
from divertgui.engine.headers import IPPROTO_TCP, parse_headers

_FIN, _SYN, _PSH = 0x01, 0x02, 0x08


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
    payload_at = tcp_at + (raw[tcp_at + 12] >> 4) * 4
    flags = raw[tcp_at + 13]
    room = limit - payload_at
    if flags & _SYN or room <= 0 or payload_at >= len(raw):
        return None
    headers, payload = raw[:payload_at], raw[payload_at:]
    seq = int.from_bytes(raw[tcp_at + 4:tcp_at + 8], "big")
    ident = int.from_bytes(raw[4:6], "big") if layout.version == 4 else 0
    parts = []
    for index, start in enumerate(range(0, len(payload), room)):
        part = bytearray(headers)
        part += payload[start:start + room]
        if layout.version == 4:
            part[2:4] = len(part).to_bytes(2, "big")
            part[4:6] = ((ident + index) & 0xFFFF).to_bytes(2, "big")
        else:
            part[4:6] = (len(part) - 40).to_bytes(2, "big")
        part[tcp_at + 4:tcp_at + 8] = ((seq + start) & 0xFFFFFFFF).to_bytes(4, "big")
        if start + room < len(payload):
            part[tcp_at + 13] = flags & ~(_FIN | _PSH)
        elif cut:
            part[tcp_at + 13] = flags & ~_FIN
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
    payload_at = layout.transport_offset + (raw[layout.transport_offset + 12] >> 4) * 4
    raw[payload_at:] = payload
    if layout.version == 4:
        raw[2:4] = b"\xff\xff"
    else:
        raw[4:6] = b"\xff\xff"
    packet.raw = raw
    return True
