"""pydivert's PacketBuilder: an IPv4/IPv6 TCP or UDP packet from its fields, checksums filled in."""

from __future__ import annotations

from divertgui.engine import header_fields as headers
from divertgui.engine import packet as engine
from divertgui.pydivert.packet import Packet


class PacketBuilder:
    def __init__(self) -> None:
        self._version = 4
        self._src_addr, self._dst_addr, self._ttl = "127.0.0.1", "127.0.0.1", 64
        self._protocol = headers.IPPROTO_TCP
        self._src_port = self._dst_port = 0
        self._payload = b""

    def ipv4(self, src: str = "127.0.0.1", dst: str = "127.0.0.1", ttl: int = 64) -> "PacketBuilder":
        self._version, self._src_addr, self._dst_addr, self._ttl = 4, src, dst, ttl
        return self

    def ipv6(self, src: str = "::1", dst: str = "::1", hop_limit: int = 64) -> "PacketBuilder":
        self._version, self._src_addr, self._dst_addr, self._ttl = 6, src, dst, hop_limit
        return self

    def tcp(self, src_port: int, dst_port: int) -> "PacketBuilder":
        self._protocol, self._src_port, self._dst_port = headers.IPPROTO_TCP, src_port, dst_port
        return self

    def udp(self, src_port: int, dst_port: int) -> "PacketBuilder":
        self._protocol, self._src_port, self._dst_port = headers.IPPROTO_UDP, src_port, dst_port
        return self

    def payload(self, data: bytes) -> "PacketBuilder":
        self._payload = bytes(data)
        return self

    def build(self) -> Packet:
        ip_len = headers.IPV4_HEADER_LEN if self._version == 4 else headers.IPV6_HEADER_LEN
        tcp = self._protocol == headers.IPPROTO_TCP
        transport_len = headers.TCP_HEADER_MIN if tcp else headers.UDP_HEADER_LEN
        size = ip_len + transport_len + len(self._payload)
        buffer = bytearray(size)
        # Fields are written through the engine's header views at the offsets the headers have.
        carrier = engine.Packet(buffer)
        if self._version == 4:
            ip = engine.IPv4Header(carrier, 0)
            ip.version, ip.hdr_len, ip.length, ip.ttl = 4, ip_len // 4, size, self._ttl
            ip.protocol = self._protocol
        else:
            ip = engine.IPv6Header(carrier, 0)
            ip.version, ip.length, ip.hop_limit = 6, size - ip_len, self._ttl
            ip.next_hdr = self._protocol
        ip.src_addr, ip.dst_addr = self._src_addr, self._dst_addr
        if tcp:
            ports = engine.TCPHeader(carrier, ip_len, transport_len)
            ports.hdr_len = transport_len // 4
        else:
            ports = engine.UDPHeader(carrier, ip_len)
            ports.length = size - ip_len
        ports.src_port, ports.dst_port = self._src_port, self._dst_port
        buffer[ip_len + transport_len:] = self._payload
        packet = Packet(buffer)
        packet.recalculate_checksums()
        return packet
