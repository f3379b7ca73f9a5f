"""The local socket a TCP or UDP packet belongs to, asked of the kernel's socket
diagnostics (NETLINK_SOCK_DIAG, linux/inet_diag.h) one flow at a time.

An exact lookup (a request without NLM_F_DUMP) is the kernel's own socket
lookup for that 5-tuple: a hash lookup answered in microseconds, where
reading /proc/net/tcp6 walks every socket of every namespace on the machine
(milliseconds with a few thousand). It finds what would receive the packet:
the connected socket, else a listening (TCP) or bound (UDP) one, a
dual-stack IPv6 socket for IPv4 too. The answer holds the socket's inode,
owner's uid and cookie, not its process: see processes.SocketOwners and
backends/socket_creators.py.
"""

from __future__ import annotations

import errno
import socket
import struct

from divertgui.engine.address_text import IPV4_MAPPED_PREFIX
from divertgui.engine.backends.netlink import NLM_F_REQUEST, NLMSG_ERROR, NLMSGERR_CODE, NLMSGHDR
from divertgui.engine.header_fields import IPPROTO_TCP, IPPROTO_UDP

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
INET_DIAG_NOCOOKIE = 0xFFFFFFFF
ALL_STATES = 0xFFFFFFFF

REQUEST = struct.Struct("=BBBBI")                  # inet_diag_req_v2: family, protocol, ext, pad, states
PORTS = struct.Struct("!HH")                       # inet_diag_sockid: sport, dport (network order)
TAIL = struct.Struct("=III")                       # if, cookie[2]
# inet_diag_msg: family, state, timer, retrans (4 bytes), sockid (48), expires, rqueue, wqueue, uid, inode.
UID_INODE = struct.Struct("=II")
UID_AT = NLMSGHDR.size + 4 + 48 + 12
COOKIE_AT = NLMSGHDR.size + 4 + 40        # the sockid's cookie, two 32-bit words, low first
COOKIE_WORDS = struct.Struct("=II")



class SocketDiag:
    """A NETLINK_SOCK_DIAG socket of the calling thread's network namespace."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def lookup(self, protocol: int, local: bytes, lport: int, remote: bytes, rport: int,
               cookie: int | None = None) -> tuple[int, int, int] | None:
        """(inode, uid, cookie) of the socket a packet of this flow belongs to, None when none does
        (or, given its `cookie`, when the socket found is another one).

        Addresses are 16 bytes, IPv4 as IPv4-mapped IPv6."""
        if local.startswith(IPV4_MAPPED_PREFIX):
            family, local, remote = socket.AF_INET, local[12:] + bytes(12), remote[12:] + bytes(12)
        else:
            family = socket.AF_INET6
        # The kernel reads the ids as the socket sees them for TCP (source = local side) and
        # as a packet arriving at it for UDP (source = remote side), as udp_dump_one() does.
        if protocol == IPPROTO_UDP:
            ids = PORTS.pack(rport, lport) + remote + local
        else:
            ids = PORTS.pack(lport, rport) + local + remote
        found = self._ask(family, protocol, ids, cookie)
        if found is not None and not found[0] and protocol == IPPROTO_TCP:
            # A connection not accepted yet has no file: the listener's process will accept it.
            found = self._ask(family, protocol, PORTS.pack(lport, 0) + local + bytes(16))
        return found if found is not None and found[0] else None

    def _ask(self, family: int, protocol: int, ids: bytes,
             cookie: int | None = None) -> tuple[int, int, int] | None:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        # With a cookie the kernel answers ESTALE when the socket it finds is not that one.
        cookie_words = (INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE) if cookie is None \
            else (cookie & 0xFFFFFFFF, cookie >> 32)
        body = REQUEST.pack(family, protocol, 0, 0, ALL_STATES) + ids + TAIL.pack(0, *cookie_words)
        self._sock.send(NLMSGHDR.pack(NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST,
                                      self._seq, 0) + body)
        while True:
            data = self._sock.recv(8192)
            _length, kind, _flags, seq, _pid = NLMSGHDR.unpack_from(data)
            if seq == self._seq:
                break
        if kind == NLMSG_ERROR:
            code = -NLMSGERR_CODE.unpack_from(data, NLMSGHDR.size)[0]
            if code in (errno.ENOENT, errno.ESTALE, 0):
                return None
            raise OSError(code, f"socket diagnostics lookup: {errno.errorcode.get(code, code)}")
        uid, inode = UID_INODE.unpack_from(data, UID_AT)
        low, high = COOKIE_WORDS.unpack_from(data, COOKIE_AT)
        return inode, uid, high << 32 | low
