"""Sending packets that have no pending verdict (new, duplicated, or from a
SEND_ONLY handle) through raw IP sockets.

Each packet carries the injecting handle's priority level in its mark plus
INJECTED_MARK, so handles at the same or a higher priority let it pass and
lower ones see it as an impostor. An inbound packet is delivered through the
local stack (it crosses lo), which is how Linux lets a raw socket hand a
packet to this machine's own sockets.
"""

from __future__ import annotations

import socket

from divertgui.engine.backends.netfilter_rules import INJECTED_MARK, level_mark

SO_MARK = 36
IPV6_HDRINCL = 36


class InjectError(OSError):
    """A packet could not be injected."""


class RawInjector:
    def __init__(self, priority: int):
        self.mark = level_mark(priority) | INJECTED_MARK
        self._sockets: dict[int, socket.socket] = {}

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

    def send(self, raw: bytes, if_idx: int = 0) -> None:
        if len(raw) < 20:
            raise InjectError(f"cannot inject a {len(raw)}-byte packet: shorter than an IP header")
        version = raw[0] >> 4
        if version == 4:
            destination = (socket.inet_ntop(socket.AF_INET, raw[16:20]), 0)
        elif version == 6 and len(raw) >= 40:
            destination = (socket.inet_ntop(socket.AF_INET6, raw[24:40]), 0, 0, if_idx)
        else:
            raise InjectError(f"cannot inject: IP version {version} in the first byte is neither 4 nor 6"
                              if version not in (4, 6) else "cannot inject: IPv6 packet shorter than its header")
        try:
            self._socket(version).sendto(raw, destination)
        except OSError as exc:
            raise InjectError(exc.errno, f"injecting an IPv{version} packet to {destination[0]} failed: "
                                         f"{exc.strerror}") from exc

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
