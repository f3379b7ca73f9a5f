"""Packets that answer a diverted packet: a TCP reset, an ICMP/ICMPv6
port unreachable, TCP data (a block page) from the packet's receiver.

Every answer goes back to the packet's sender, from its receiver, and its
address sends it the way the sender will receive it (`reply_address`); the
exception is `tcp_reset_onward`, which resets the receiver's end, as if the
sender had. IPv4 and IPv6 alike; checksums are computed.
"""

from __future__ import annotations

from divertgui.engine.address import Address, Layer
from divertgui.engine.header_fields import (ICMP_HEADER_LEN, IPPROTO_ICMP, IPPROTO_ICMPV6, IPV4, IPV6,
                                            IPV6_HEADER_LEN, field_value)
from divertgui.engine.packet import Packet
from divertgui.engine.packet_build import ACK, FIN, PSH, RST, SYN, ip_packet, tcp_packet

__all__ = ["ACK", "FIN", "PSH", "RST", "SYN", "icmp_unreachable", "reply_address", "reset_numbers",
           "reset_onward_in_place", "tcp_data_reply", "tcp_reset", "tcp_reset_onward"]

# An ICMPv6 error quotes as much of the packet as fits the minimum IPv6 MTU;
# an ICMP error the IP header and the first 64 bits of the datagram (RFC 792).
IPV6_MIN_MTU = 1280
ICMP_QUOTED_DATA = 8
_PORT_UNREACHABLE = {IPPROTO_ICMP: (3, 3), IPPROTO_ICMPV6: (1, 4)}     # (type, code)


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


def _addresses(raw: bytes) -> tuple[int, bytes, bytes]:
    """(IP version, source, destination) of a raw packet."""
    version = field_value(raw, 0, IPV4["version"]) if raw else 0
    header = {4: IPV4, 6: IPV6}.get(version)
    if header is None or len(raw) < header["dst_addr"].span.stop:
        raise ValueError(f"only an IP packet can be answered: {len(raw)} bytes starting {bytes(raw[:8]).hex()}")
    return version, raw[header["src_addr"].span], raw[header["dst_addr"].span]


def _window(flags: int) -> int:
    return 64240 if flags & ACK else 0


def _packet(raw: bytes, address: Address) -> Packet:
    reply = Packet(raw, address)
    reply.recalculate_checksums()
    return reply


def tcp_reset(packet: Packet) -> Packet | None:
    """The RST the packet's receiver would send back to refuse it; None for a RST or a non-TCP packet."""
    tcp = packet.tcp
    if tcp is None or tcp.flags & RST:
        return None
    version, src, dst = _addresses(packet.raw)
    seq, ack, flags = reset_numbers(tcp.seq_num, tcp.ack_num, tcp.flags, len(packet.payload or b""))
    return _packet(tcp_packet(dst, src, tcp.dst_port, tcp.src_port, seq, ack, flags, window=_window(flags)),
                   reply_address(packet.address, version == 6))


def reset_onward_in_place(packet: Packet) -> None:
    """Turn a TCP packet, in place, into the RST its receiver accepts: the
    same sequence number, no payload, its ACK kept if it had one."""
    packet.payload = b""
    tcp = packet.tcp
    tcp.flags = RST | (tcp.flags & ACK)
    packet.recalculate_checksums()


def tcp_reset_onward(packet: Packet) -> Packet | None:
    """A RST from the packet's sender to its receiver, in the packet's own
    direction, that closes the receiver's end (WinDivert's webfilter resets
    the server this way); None for a RST or a non-TCP packet."""
    tcp = packet.tcp
    if tcp is None or tcp.flags & RST:
        return None
    version, _src, _dst = _addresses(packet.raw)
    address = Address(outbound=packet.address.outbound, loopback=packet.address.loopback, ipv6=version == 6,
                      if_idx=packet.address.if_idx, layer=packet.address.layer)
    onward = Packet(bytes(packet.raw), address)
    reset_onward_in_place(onward)
    return onward


def tcp_data_reply(packet: Packet, data: bytes, fin: bool = True) -> Packet | None:
    """`data` from the packet's receiver back to its sender, in sequence with
    what the packet carried, ending the receiver's side with FIN when `fin`."""
    tcp = packet.tcp
    if tcp is None:
        return None
    version, src, dst = _addresses(packet.raw)
    sent = len(packet.payload or b"") + (1 if tcp.flags & SYN else 0) + (1 if tcp.flags & FIN else 0)
    flags = PSH | ACK | (FIN if fin else 0)
    raw = tcp_packet(dst, src, tcp.dst_port, tcp.src_port, tcp.ack_num, tcp.seq_num + sent, flags, data,
                     window=_window(flags))
    return _packet(raw, reply_address(packet.address, version == 6))


def icmp_unreachable(packet: Packet) -> Packet:
    """ICMP port unreachable (ICMPv6 destination unreachable, port unreachable) quoting the packet."""
    raw = packet.raw
    version, src, dst = _addresses(raw)
    if version == 4:
        quoted, protocol = raw[:field_value(raw, 0, IPV4["hdr_len"]) * 4 + ICMP_QUOTED_DATA], IPPROTO_ICMP
    else:
        quoted, protocol = raw[:IPV6_MIN_MTU - IPV6_HEADER_LEN - ICMP_HEADER_LEN], IPPROTO_ICMPV6
    kind, code = _PORT_UNREACHABLE[protocol]
    # Type, code, checksum (computed below) and an unused word, then the quote.
    message = bytes([kind, code]) + bytes(ICMP_HEADER_LEN - 2) + quoted
    return _packet(ip_packet(dst, src, protocol, message), reply_address(packet.address, version == 6))
