"""Packets that answer a diverted packet: a TCP reset, an ICMP/ICMPv6
port unreachable, TCP data (a block page) from the packet's receiver.

Every answer goes back to the packet's sender, from its receiver, and its
address sends it the way the sender will receive it (`reply_address`); the
exception is `tcp_reset_onward`, which resets the receiver's end, as if the
sender had. IPv4 and IPv6 alike; checksums are computed.
"""

from __future__ import annotations

import struct

from divertgui.engine.address import Address, Layer
from divertgui.engine.headers import IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP
from divertgui.engine.packet import Packet

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
TTL = 64
# An ICMPv6 error quotes as much of the packet as fits the minimum IPv6 MTU.
IPV6_MIN_MTU = 1280


def reply_address(address: Address, ipv6: bool) -> Address:
    """Where an answer to a packet seen with `address` is sent.

    A packet that left this host is answered on the inbound path (it
    reaches the local sender), one that arrived on the outbound path.
    Loopback packets are seen on the outbound path only, both ways, and a
    forwarded packet's answer is forwarded back: those stay outbound.
    """
    outbound = address.outbound
    if not (address.loopback or address.layer == Layer.NETWORK_FORWARD):
        outbound = not outbound
    return Address(outbound=outbound, loopback=address.loopback, ipv6=ipv6, if_idx=address.if_idx,
                   sub_if_idx=address.sub_if_idx, layer=address.layer, timestamp=address.timestamp)


def reset_numbers(seq: int, ack: int, flags: int, data_len: int) -> tuple[int, int, int]:
    """(sequence, acknowledgement, flags) of the RST that refuses a segment.

    The RST's sequence number is what the sender expects next from us (the
    segment's acknowledgement; 0 if it acknowledges nothing, as a SYN), and
    it acknowledges everything the segment carried (SYN and FIN count one),
    so the sender accepts it in any state.
    """
    sent = data_len + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
    return (ack if flags & ACK else 0), (seq + sent) & 0xFFFFFFFF, RST | ACK


def _ip_header(version: int, src: bytes, dst: bytes, protocol: int, payload_len: int) -> bytes:
    if version == 4:
        return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, 0, 0x4000, TTL, protocol, 0, src, dst)
    return struct.pack("!IHBB16s16s", 6 << 28, payload_len, protocol, TTL, src, dst)


def _addresses(raw: bytes) -> tuple[int, bytes, bytes]:
    """(IP version, source, destination) of a raw packet."""
    if raw[0] >> 4 == 4:
        return 4, raw[12:16], raw[16:20]
    return 6, raw[8:24], raw[24:40]


def _tcp_segment(sport: int, dport: int, seq: int, ack: int, flags: int, data: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 64240 if flags & ACK else 0,
                       0, 0) + data


def _packet(version: int, src: bytes, dst: bytes, protocol: int, body: bytes, address: Address) -> Packet:
    reply = Packet(_ip_header(version, src, dst, protocol, len(body)) + body, address)
    reply.recalculate_checksums()
    return reply


def tcp_reset(packet: Packet) -> Packet | None:
    """The RST the packet's receiver would send back to refuse it; None for a RST or a non-TCP packet."""
    tcp = packet.tcp
    if tcp is None or tcp.flags & RST:
        return None
    version, src, dst = _addresses(bytes(packet.raw))
    seq, ack, flags = reset_numbers(tcp.seq_num, tcp.ack_num, tcp.flags, len(packet.payload or b""))
    segment = _tcp_segment(tcp.dst_port, tcp.src_port, seq, ack, flags)
    return _packet(version, dst, src, IPPROTO_TCP, segment, reply_address(packet.address, version == 6))


def tcp_reset_onward(packet: Packet) -> Packet | None:
    """A RST from the packet's sender to its receiver, in the packet's own
    direction, that closes the receiver's end (WinDivert's webfilter resets
    the server this way); None for a RST or a non-TCP packet."""
    tcp = packet.tcp
    if tcp is None or tcp.flags & RST:
        return None
    version, src, dst = _addresses(bytes(packet.raw))
    segment = _tcp_segment(tcp.src_port, tcp.dst_port, tcp.seq_num, tcp.ack_num, RST | ACK)
    address = Address(outbound=packet.address.outbound, loopback=packet.address.loopback, ipv6=version == 6,
                      if_idx=packet.address.if_idx, layer=packet.address.layer)
    return _packet(version, src, dst, IPPROTO_TCP, segment, address)


def tcp_data_reply(packet: Packet, data: bytes, fin: bool = True) -> Packet | None:
    """`data` from the packet's receiver back to its sender, in sequence with
    what the packet carried, ending the receiver's side with FIN when `fin`."""
    tcp = packet.tcp
    if tcp is None:
        return None
    version, src, dst = _addresses(bytes(packet.raw))
    sent = len(packet.payload or b"") + (1 if tcp.flags & SYN else 0) + (1 if tcp.flags & FIN else 0)
    flags = PSH | ACK | (FIN if fin else 0)
    segment = _tcp_segment(tcp.dst_port, tcp.src_port, tcp.ack_num, (tcp.seq_num + sent) & 0xFFFFFFFF, flags, data)
    return _packet(version, dst, src, IPPROTO_TCP, segment, reply_address(packet.address, version == 6))


def icmp_unreachable(packet: Packet) -> Packet:
    """ICMP port unreachable (ICMPv6 destination unreachable, port unreachable) quoting the packet."""
    raw = bytes(packet.raw)
    version, src, dst = _addresses(raw)
    if version == 4:
        quoted = raw[:(raw[0] & 0x0F) * 4 + 8]
        message, protocol = struct.pack("!BBHI", 3, 3, 0, 0) + quoted, IPPROTO_ICMP
    else:
        quoted = raw[:IPV6_MIN_MTU - 48]
        message, protocol = struct.pack("!BBHI", 1, 4, 0, 0) + quoted, IPPROTO_ICMPV6
    return _packet(version, dst, src, protocol, message, reply_address(packet.address, version == 6))
