"""Sending packets that have no pending verdict (new, duplicated, or from a
SEND_ONLY handle).

As with WinDivertSend, only the address's `outbound` decides the path, not
the packet's IP addresses:

- outbound: a raw IP socket (header included); the packet is routed by its
  destination and leaves as if this host had sent it.
- inbound: a packet socket on `lo` hands the packet to the receive path,
  so it meets PREROUTING and INPUT (as it would arriving from the network),
  reaches a local socket when its destination is this host's, and is
  forwarded or dropped like any arriving packet otherwise. Linux lets no
  program make a packet arrive on another interface's receive path, so it
  arrives on `lo`, not on `if_idx`; it carries INBOUND_INJECTED_MARK so
  that our INPUT chains, which skip `lo` (loopback is diverted on the
  outbound path), still offer it to the handles below.

Each packet carries the injecting handle's priority level in its mark, so
handles at the same or a higher priority let it pass and lower ones see it.
"""

from __future__ import annotations

import socket

from divertgui.engine.backends.netfilter_rules import INBOUND_INJECTED_MARK, level_mark
from divertgui.engine.errors import InjectError
from divertgui.engine.header_fields import IPV4, IPV4_HEADER_LEN, IPV6, IPV6_HEADER_LEN, ip_version

SO_MARK = 36
IPV6_HDRINCL = 36
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
# lo's hardware address: a frame sent to it is for this host.
LOOPBACK_HW_ADDRESS = b"\0" * 6


class RawInjector:
    def __init__(self, priority: int):
        self.mark = level_mark(priority)
        self._sockets: dict[int, socket.socket] = {}
        self._inbound: socket.socket | None = None

    def _socket(self, version: int) -> socket.socket:
        sock = self._sockets.get(version)
        if sock is None:
            if version == 4:
                sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
            else:
                sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
                # IPPROTO_RAW implies header-included for IPv6; said explicitly for older kernels.
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_HDRINCL, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, self.mark)
            self._sockets[version] = sock
        return sock

    def _inbound_socket(self) -> socket.socket:
        if self._inbound is None:
            # Protocol 0: this socket sends only, it never receives a copy.
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, self.mark | INBOUND_INJECTED_MARK)
            self._inbound = sock
        return self._inbound

    def send(self, raw: bytes, if_idx: int = 0, outbound: bool = True) -> None:
        if len(raw) < IPV4_HEADER_LEN:
            raise InjectError(f"cannot inject a {len(raw)}-byte packet: shorter than an IP header")
        version = ip_version(raw)
        if version == 4:
            destination = (socket.inet_ntop(socket.AF_INET, raw[IPV4["dst_addr"].span]), 0)
        elif version == 6 and len(raw) >= IPV6_HEADER_LEN:
            destination = (socket.inet_ntop(socket.AF_INET6, raw[IPV6["dst_addr"].span]), 0, 0, if_idx)
        else:
            raise InjectError(f"cannot inject: IP version {version} in the first byte is neither 4 nor 6"
                              if version not in (4, 6) else "cannot inject: IPv6 packet shorter than its header")
        try:
            if outbound:
                self._socket(version).sendto(raw, destination)
            else:
                self._inbound_socket().sendto(raw, ("lo", ETH_P_IP if version == 4 else ETH_P_IPV6, 0, 0,
                                                    LOOPBACK_HW_ADDRESS))
        except OSError as exc:
            way = "outbound to" if outbound else "inbound for"
            raise InjectError(exc.errno, f"injecting an IPv{version} packet {way} {destination[0]} failed: "
                                         f"{exc.strerror}") from exc

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
        if self._inbound is not None:
            self._inbound.close()
            self._inbound = None
