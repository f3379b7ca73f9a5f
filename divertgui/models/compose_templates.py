"""Packets to start composing from: well-formed, lengths and checksums right."""

from __future__ import annotations

import ipaddress

import dpkt

from divertgui.engine.address import Address
from divertgui.engine.header_fields import ip_version
from divertgui.engine.packet import Packet

V4_LOCAL, V4_REMOTE = "10.0.0.2", "10.0.0.1"
V6_LOCAL, V6_REMOTE = "fd00::2", "fd00::1"


def _ipv4(payload, protocol: int) -> bytes:
    ip = dpkt.ip.IP(src=ipaddress.IPv4Address(V4_LOCAL).packed, dst=ipaddress.IPv4Address(V4_REMOTE).packed,
                    p=protocol, ttl=64, data=payload)
    return bytes(ip)


def _ipv6(payload, protocol: int) -> bytes:
    ip = dpkt.ip6.IP6(src=ipaddress.IPv6Address(V6_LOCAL).packed, dst=ipaddress.IPv6Address(V6_REMOTE).packed,
                      nxt=protocol, hlim=64, data=payload, plen=len(bytes(payload)))
    ip.extension_hdrs = {}
    return bytes(ip)


def _dns_query() -> bytes:
    query = dpkt.dns.DNS(id=0x1234, qd=[dpkt.dns.DNS.Q(name="example.com", type=dpkt.dns.DNS_A)])
    return bytes(query)


def _templates() -> dict[str, bytes]:
    syn = dpkt.tcp.TCP(sport=40000, dport=80, seq=1000, flags=dpkt.tcp.TH_SYN, win=65535)
    get = dpkt.tcp.TCP(sport=40000, dport=80, seq=1001, ack=1, flags=dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK,
                       win=65535, data=b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
    dns = dpkt.udp.UDP(sport=40000, dport=53, data=_dns_query())
    dns.ulen = len(bytes(dns))
    echo = dpkt.icmp.ICMP(type=8, code=0, data=dpkt.icmp.ICMP.Echo(id=1, seq=1, data=b"divertgui ping"))
    echo6 = dpkt.icmp6.ICMP6(type=128, code=0, data=dpkt.icmp6.ICMP6.Echo(id=1, seq=1, data=b"divertgui ping"))
    udp6 = dpkt.udp.UDP(sport=40000, dport=9999, data=b"hello")
    udp6.ulen = len(bytes(udp6))
    return {
        "TCP SYN (IPv4)": _ipv4(syn, 6),
        "HTTP GET (IPv4)": _ipv4(get, 6),
        "DNS query (IPv4 UDP)": _ipv4(dns, 17),
        "Ping (ICMP echo request)": _ipv4(echo, 1),
        "Ping (ICMPv6 echo request)": _ipv6(echo6, 58),
        "UDP datagram (IPv6)": _ipv6(udp6, 17),
    }


def template_names() -> list[str]:
    return list(_templates())


def template(name: str, outbound: bool = True) -> tuple[bytes, Address]:
    raw = _templates()[name]
    address = Address(outbound=outbound, ipv6=ip_version(raw) == 6)
    packet = Packet(bytearray(raw), address)
    packet.fix_lengths_and_checksums()
    return packet.raw, address
