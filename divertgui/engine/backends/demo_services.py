"""What the demo network's hosts say: clients and servers for HTTP, TLS-like
TCP, DNS, QUIC-like UDP and ping, and the random choice of the next conversation."""

from __future__ import annotations

import random
import struct
from typing import TYPE_CHECKING

from divertgui.engine.backends.demo_hosts import NAMES, Host
from divertgui.engine.backends.demo_packets import ICMP, ICMPV6, TCP, UDP, Segment, dns_query, echo_packet, udp_packet
from divertgui.engine.backends.demo_tcp import TcpEnd

if TYPE_CHECKING:
    from divertgui.engine.backends.demo import DemoBackend


def _segments(data: bytes, mss: int = 1400) -> list[tuple[bytes, bool]]:
    parts = [data[i:i + mss] for i in range(0, len(data), mss)] or [b""]
    return [(part, i == len(parts) - 1) for i, part in enumerate(parts)]


class _Client:
    """Sends each request in turn once the previous answer has ended (a PSH), then closes."""

    def __init__(self, requests: list[bytes]) -> None:
        self.requests = list(requests)
        self.done = False

    def on_data(self, data: bytes | None, push: bool) -> list[tuple[bytes, bool]]:
        if data is not None and not push:
            return []
        if not self.requests:
            self.done = True
            return []
        return _segments(self.requests.pop(0))


class _HttpServer:
    def __init__(self, net: DemoBackend) -> None:
        self.net, self.buffer, self.done = net, b"", False

    def on_data(self, data: bytes | None, push: bool) -> list[tuple[bytes, bool]]:
        self.buffer += data or b""
        if b"\r\n\r\n" not in self.buffer:
            return []
        request, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        words = request.split(b" ")
        path = words[1] if len(words) > 1 else b"/"
        size = 200 + self.net.rng.randrange(6000)
        body = b"<html><body><h1>" + path + b"</h1>" + b"x" * size + b"</body></html>\n"
        head = (b"HTTP/1.1 200 OK\r\nServer: demo\r\nContent-Type: text/html\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\n\r\n")
        return _segments(head + body)


def _tls_record(kind: int, size: int, rng: random.Random) -> bytes:
    return bytes((kind, 3, 3)) + size.to_bytes(2, "big") + rng.randbytes(size)


class _TlsServer:
    """Answers complete TLS-shaped records: a hello with a flight of handshake records, data with data."""

    def __init__(self, net: DemoBackend) -> None:
        self.net, self.buffer, self.done = net, b"", False

    def on_data(self, data: bytes | None, push: bool) -> list[tuple[bytes, bool]]:
        self.buffer += data or b""
        kinds = []
        while len(self.buffer) >= 5 and len(self.buffer) >= 5 + int.from_bytes(self.buffer[3:5], "big"):
            kinds.append(self.buffer[0])
            self.buffer = self.buffer[5 + int.from_bytes(self.buffer[3:5], "big"):]
        if not kinds:
            return []
        rng = self.net.rng
        if 0x16 in kinds and 0x17 not in kinds:
            flight = _tls_record(0x16, 90, rng) + _tls_record(0x16, 2400 + rng.randrange(900), rng)
        else:
            flight = b"".join(_tls_record(0x17, 400 + rng.randrange(4000), rng) for _ in range(1 + rng.randrange(3)))
        return _segments(flight)


def _client_hello(rng: random.Random, name: str) -> bytes:
    hello = b"\x03\x03" + rng.randbytes(32) + name.encode() + rng.randbytes(230)
    body = b"\x01" + len(hello).to_bytes(3, "big") + hello
    return b"\x16\x03\x01" + len(body).to_bytes(2, "big") + body


# -- DNS and QUIC --------------------------------------------------------------

def _dns_answer(net: DemoBackend, query: bytes) -> bytes | None:
    """The resolver's answer: an address derived from the asked name, or FORMERR for garbage."""
    if len(query) < 17:
        return None
    ident, flags, qdcount = struct.unpack_from("!HHH", query)
    at, labels = 12, []
    while at < len(query) and query[at] and len(labels) < 64:
        labels.append(query[at + 1:at + 1 + query[at]])
        at += 1 + query[at]
    if qdcount != 1 or flags & 0x8000 or at + 5 > len(query):
        return struct.pack("!HHHHHH", ident, 0x8181, 0, 0, 0, 0)
    question = query[12:at + 5]
    qtype = int.from_bytes(query[at + 1:at + 3], "big")
    digest = sum(b".".join(labels)) & 0xFF
    if qtype == 28:
        rdata = bytes.fromhex("20010db8000000000000000000") + bytes((0, 0, digest))
    else:
        rdata = bytes((198, 51, 100, digest))
    answer = b"\xc0\x0c" + struct.pack("!HHIH", qtype, 1, 300, len(rdata)) + rdata
    return struct.pack("!HHHHHH", ident, 0x8180, 1, 1, 0, 0) + question + answer


class _UdpExchange:
    """A client socket sending datagrams in turn; each waits for an answer, retried twice."""

    def __init__(self, net: DemoBackend, host: Host, local: bytes, remote: bytes, rport: int,
                 datagrams: list[bytes], answers_each: int, retry_ns: int) -> None:
        self.net, self.host, self.local, self.remote, self.rport = net, host, local, remote, rport
        self.lport = net.ephemeral_port()
        self.datagrams, self.answers_each, self.retry_ns = list(datagrams), answers_each, retry_ns
        self.waiting = 0
        self.attempt = 0
        self.tries = 0
        self.key = (local, UDP, self.lport, remote, rport)
        net.bind(self.key, self)
        self._next(net.now)

    def _next(self, at: int) -> None:
        if not self.datagrams:
            self.net.unbind(self.key)
            return
        self.attempt += 1
        self.tries += 1
        self.waiting = self.answers_each
        payload = self.datagrams[0]
        self.net.send_at(at, udp_packet(self.local, self.remote, self.lport, self.rport, payload,
                                        self.net.next_ident()),
                         Segment(self.local, self.remote, UDP, self.lport, self.rport, 0, 0, 0, payload))
        self.net.call_at(at + self.retry_ns, self._timeout, self.attempt)

    def _timeout(self, attempt: int) -> None:
        if attempt != self.attempt or not self.datagrams:
            return
        if self.tries >= 3:
            self.net.count("udp_gave_up")
            self.net.unbind(self.key)
            return
        self.net.count("retransmitted")
        self._next(self.net.now)

    def receive(self, s: Segment, host: Host) -> None:
        self.waiting -= 1
        if self.waiting <= 0 and self.datagrams:
            self.datagrams.pop(0)
            self.tries = 0
            self._next(self.net.now + host.delay_ns)


def _quic_answer(net: DemoBackend, datagram: bytes) -> bytes | None:
    if not datagram:
        return None
    rng = net.rng
    if datagram[0] & 0x80:
        return bytes((0xE1,)) + b"\0\0\0\1" + datagram[5:23] + rng.randbytes(1000 + rng.randrange(150))
    return bytes((0x41,)) + datagram[1:9] + rng.randbytes(1100 + rng.randrange(150))


def _quic_initial(rng: random.Random) -> bytes:
    dcid, scid = rng.randbytes(8), rng.randbytes(8)
    return b"\xc3\0\0\0\1\x08" + dcid + b"\x08" + scid + b"\0\x44\xd0" + rng.randbytes(1200 - 25)


class _Ping:
    def __init__(self, net: DemoBackend, host: Host, local: bytes, remote: bytes, count: int) -> None:
        self.net, self.local, self.remote, self.left = net, local, remote, count
        self.ident = net.rng.randrange(1, 65536)
        self.seq = 0
        self.protocol = ICMP if len(local) == 4 else ICMPV6
        self.key = (local, self.protocol, self.ident, remote, 0)
        net.bind(self.key, self)
        self._send()

    def _send(self) -> None:
        if self.left == 0:
            self.net.unbind(self.key)
            return
        self.left -= 1
        self.seq += 1
        payload = struct.pack("!Q", self.net.now // 1000) + bytes(range(0x10, 0x38))
        self.net.send_at(self.net.now, echo_packet(self.local, self.remote, False, self.ident, self.seq, payload),
                         Segment(self.local, self.remote, self.protocol, self.ident, self.seq, 0, 0,
                                 8 if self.protocol == ICMP else 128, payload))
        self.net.call_at(self.net.now + 100_000_000, self._send)

    def receive(self, s: Segment, host: Host) -> None:
        self.net.count("echo_replies")


SERVICES = {
    ("web", TCP, 80): _HttpServer, ("cdn", TCP, 80): _HttpServer, ("loopback", TCP, 8080): _HttpServer,
    ("web", TCP, 443): _TlsServer, ("cdn", TCP, 443): _TlsServer, ("peer", TCP, 443): _TlsServer,
    ("resolver", UDP, 53): _dns_answer,
    ("web", UDP, 443): _quic_answer, ("cdn", UDP, 443): _quic_answer,
}


def start_conversation(net: DemoBackend) -> float:
    """Start one conversation of a random kind; returns the mean packets per conversation."""
    rng = net.rng
    client = net.client
    v6 = rng.random() < 0.4
    local = client.v6 if v6 else client.v4
    kind = rng.random()

    def addr(name: str) -> bytes:
        host = net.hosts[name]
        return host.v6 if v6 else host.v4

    if kind < 0.30:
        name = rng.choice(NAMES)
        _UdpExchange(net, client, local, addr("resolver"), 53,
                     [dns_query(rng.randrange(65536), name, 28 if v6 else 1)], 1, 1_000_000_000)
    elif kind < 0.50:
        path = "/" + rng.choice(("", "index.html", "api/v1/items", "img/logo.png", "news"))
        request = (f"GET {path} HTTP/1.1\r\nHost: {rng.choice(NAMES)}\r\nUser-Agent: demo\r\n"
                   "Accept: */*\r\n\r\n").encode()
        if rng.random() < 0.15 and "loopback" in net.hosts:
            TcpEnd.connect(net, client, addr("loopback"), addr("loopback"), 8080, _Client([request]))
        else:
            TcpEnd.connect(net, client, local, addr(rng.choice(("web", "cdn"))), 80, _Client([request]))
    elif kind < 0.70:
        requests = [_client_hello(rng, rng.choice(NAMES)),
                    _tls_record(0x14, 1, rng) + _tls_record(0x17, 40 + rng.randrange(400), rng)]
        TcpEnd.connect(net, client, local, addr(rng.choice(("web", "cdn", "peer"))), 443, _Client(requests))
    elif kind < 0.85:
        datagrams = [_quic_initial(rng)] + [bytes((0x40,)) + rng.randbytes(8 + 20 + rng.randrange(200))
                                            for _ in range(1 + rng.randrange(5))]
        _UdpExchange(net, client, local, addr(rng.choice(("web", "cdn"))), 443, datagrams, 1, 300_000_000)
    else:
        _Ping(net, client, local, addr(rng.choice(("gateway", "web", "peer"))), 1 + rng.randrange(4))
    return 8.7
