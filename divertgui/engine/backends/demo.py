"""A simulated network to divert from: a few hosts talking DNS, HTTP, TLS-like
TCP, QUIC-like UDP and ping, as real IPv4/IPv6 bytes with correct checksums.

"This machine" is 10.0.0.2 / fd00::2. Every packet to or from it crosses the
divert point once (loopback packets on the outbound path only); a matching
packet is out of the network until verdict() puts it back, and what is put
back is what the receiving host parses and answers, so drops, edits and
injections have the consequences they would have on a real network: a
dropped request gets no reply, a dropped TCP segment is retransmitted, a bad
checksum is silently discarded by the receiver.

Time is the `clock` (monotonic nanoseconds by default); with a given clock,
the same seed, calls and verdicts give the same packets.
"""

from __future__ import annotations

import collections
import heapq
import ipaddress
import random
import struct
import time
from typing import Callable, NamedTuple

from divertgui.engine.address import PARAM_LIMITS, Address, Flag, Layer, Param
from divertgui.engine.backends.base import Backend, Captured
from divertgui.engine.checksum import internet_checksum

MAX_RATE = 50_000
LOCAL_DELAY_NS = 40_000
SEGMENT_GAP_NS = 15_000
RTO_NS = 200_000_000
MAX_RETRIES = 6
# After a stall (nobody calling recv), new conversations restart from this far
# back instead of all at once.
MAX_CATCH_UP_NS = 200_000_000
MAX_LAG_NS = 250_000_000
BATCH_WAIT_NS = 6_000_000

TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
IF_LOOPBACK, IF_LAN = 1, 2
_SNIFF, _DROP, _SEND_ONLY = int(Flag.SNIFF), int(Flag.DROP), int(Flag.SEND_ONLY)


def _ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


class Host(NamedTuple):
    name: str
    v4: bytes
    v6: bytes
    local: bool
    delay_ns: int      # from receiving a packet to its answer crossing the divert point


HOSTS = (
    Host("this", _ip("10.0.0.2"), _ip("fd00::2"), True, LOCAL_DELAY_NS),
    Host("loopback", _ip("127.0.0.1"), _ip("::1"), True, LOCAL_DELAY_NS),
    Host("gateway", _ip("10.0.0.1"), _ip("fd00::1"), False, 600_000),
    Host("resolver", _ip("10.0.0.53"), _ip("fd00::53"), False, 1_500_000),
    Host("web", _ip("198.51.100.10"), _ip("2001:db8:10::10"), False, 18_000_000),
    Host("cdn", _ip("203.0.113.7"), _ip("2001:db8:7::7"), False, 9_000_000),
    Host("peer", _ip("192.0.2.44"), _ip("2001:db8:44::44"), False, 35_000_000),
)
# At the NETWORK_FORWARD layer the traffic is that of a LAN client routed through this machine.
LAN_CLIENT = Host("lan-client", _ip("10.0.0.23"), _ip("fd00::23"), False, 300_000)

NAMES = ("example.com", "www.example.org", "api.example.net", "cdn.example.com",
         "mail.example.org", "updates.example.net", "static.example.com", "login.example.org")


# -- packet bytes ------------------------------------------------------------------
#
# Checksums are sums of 16-bit words modulo 0xFFFF, and 2**16 is 1 modulo
# 0xFFFF: a field wider than a word may be added as one number, and a
# header's words need not be packed before they are summed.

_IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
_IPV6_HEADER = struct.Struct("!IHBB16s16s")
_TCP_HEADER = struct.Struct("!HHIIBBHHH")
_UDP_HEADER = struct.Struct("!HHHH")
_ECHO_HEADER = struct.Struct("!BBHHH")
_IPV4_FIXED_WORDS = 0x4500 + 0x4000      # version/IHL/TOS and the DF flag


def _fold(words: int) -> int:
    """internet_checksum of a sum known not to be zero."""
    rest = words % 0xFFFF
    return 0xFFFF - rest if rest else 0


def _payload_words(payload: bytes) -> int:
    # Data after an even-length header: an odd length is padded with one zero byte.
    return int.from_bytes(payload, "big") << 8 if len(payload) & 1 else int.from_bytes(payload, "big")


def ip_packet(src: bytes, dst: bytes, protocol: int, segment: bytes, ident: int = 0, ttl: int = 64) -> bytes:
    if len(src) == 4:
        total = 20 + len(segment)
        ident &= 0xFFFF
        checksum = _fold(_IPV4_FIXED_WORDS + total + ident + (ttl << 8) + protocol + int.from_bytes(src + dst, "big"))
        return _IPV4_HEADER.pack(0x45, 0, total, ident, 0x4000, ttl, protocol, checksum, src, dst) + segment
    return _IPV6_HEADER.pack(0x60000000, len(segment), protocol, ttl, src, dst) + segment


def tcp_packet(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
               payload: bytes = b"", window: int = 64240, ident: int = 0) -> bytes:
    seq &= 0xFFFFFFFF
    ack &= 0xFFFFFFFF
    words = (int.from_bytes(src + dst, "big") + TCP + 20 + len(payload) + sport + dport + seq + ack
             + 0x5000 + flags + window + _payload_words(payload))
    header = _TCP_HEADER.pack(sport, dport, seq, ack, 0x50, flags, window, _fold(words), 0)
    return ip_packet(src, dst, TCP, header + payload, ident)


class TcpFlowBytes:
    """tcp_packet() for one direction of one connection, with the sums of its fixed fields done once."""

    def __init__(self, src: bytes, dst: bytes, sport: int, dport: int, window: int = 64240) -> None:
        self.src, self.dst, self.sport, self.dport, self.window = src, dst, sport, dport, window
        addresses = int.from_bytes(src + dst, "big")
        self.v4 = len(src) == 4
        self.tcp_words = addresses + TCP + 20 + sport + dport + 0x5000 + window
        self.ip_words = _IPV4_FIXED_WORDS + (64 << 8) + TCP + addresses

    def packet(self, seq: int, ack: int, flags: int, payload: bytes, ident: int) -> bytes:
        words = self.tcp_words + len(payload) + seq + ack + flags + _payload_words(payload)
        segment = _TCP_HEADER.pack(self.sport, self.dport, seq, ack, 0x50, flags, self.window, _fold(words), 0)
        if self.v4:
            total = 40 + len(payload)
            ident &= 0xFFFF
            header = _IPV4_HEADER.pack(0x45, 0, total, ident, 0x4000, 64, TCP, _fold(self.ip_words + total + ident),
                                       self.src, self.dst)
        else:
            header = _IPV6_HEADER.pack(0x60000000, 20 + len(payload), TCP, 64, self.src, self.dst)
        return header + segment + payload


def udp_packet(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes, ident: int = 0) -> bytes:
    length = 8 + len(payload)
    words = int.from_bytes(src + dst, "big") + UDP + 2 * length + sport + dport + _payload_words(payload)
    # A UDP checksum of zero means "none": a computed zero is sent as 0xFFFF.
    checksum = _fold(words) or 0xFFFF
    return ip_packet(src, dst, UDP, _UDP_HEADER.pack(sport, dport, length, checksum) + payload, ident)


def echo_packet(src: bytes, dst: bytes, reply: bool, ident: int, seq: int, payload: bytes) -> bytes:
    if len(src) == 4:
        kind = 0 if reply else 8
        checksum = internet_checksum((kind << 8) + ident + seq + _payload_words(payload))
        return ip_packet(src, dst, ICMP, _ECHO_HEADER.pack(kind, 0, checksum, ident, seq) + payload, ident)
    kind = 129 if reply else 128
    words = (int.from_bytes(src + dst, "big") + ICMPV6 + 8 + len(payload) + (kind << 8) + ident + seq
             + _payload_words(payload))
    return ip_packet(src, dst, ICMPV6, _ECHO_HEADER.pack(kind, 0, _fold(words), ident, seq) + payload)


class Segment(NamedTuple):
    """What a receiving host reads from a packet."""

    src: bytes
    dst: bytes
    protocol: int
    sport: int          # ICMP echo: the identifier
    dport: int          # ICMP echo: the sequence number
    seq: int
    ack: int
    flags: int          # ICMP: the type
    payload: bytes


def parse_segment(raw: bytes) -> Segment | None:
    """The segment a host's stack accepts, or None when it would discard the packet."""
    n = len(raw)
    if n < 20:
        return None
    version = raw[0] >> 4
    if version == 4:
        ihl = (raw[0] & 15) * 4
        total = int.from_bytes(raw[2:4], "big")
        if ihl < 20 or total < ihl or total > n or raw[6] & 0x3F or raw[7] or raw[6] & 0x20:
            return None
        if internet_checksum(int.from_bytes(raw[:ihl], "big")) != 0:
            return None
        src, dst, protocol, body = raw[12:16], raw[16:20], raw[9], raw[ihl:total]
    elif version == 6:
        if n < 40 or int.from_bytes(raw[4:6], "big") + 40 > n:
            return None
        src, dst, protocol = raw[8:24], raw[24:40], raw[6]
        body = raw[40:40 + int.from_bytes(raw[4:6], "big")]
    else:
        return None
    odd = 256 if len(body) & 1 else 1
    if protocol == TCP:
        if len(body) < 20 or (body[12] >> 4) * 4 < 20 or (body[12] >> 4) * 4 > len(body):
            return None
        if internet_checksum(int.from_bytes(src + dst, "big") + TCP + len(body)
                             + int.from_bytes(body, "big") * odd) != 0:
            return None
        sport, dport, seq, ack = struct.unpack_from("!HHII", body)
        return Segment(src, dst, TCP, sport, dport, seq, ack, body[13], body[(body[12] >> 4) * 4:])
    if protocol == UDP:
        if len(body) < 8 or int.from_bytes(body[4:6], "big") != len(body):
            return None
        if body[6:8] != b"\0\0" and internet_checksum(
                int.from_bytes(src + dst, "big") + UDP + len(body) + int.from_bytes(body, "big") * odd) != 0:
            return None
        sport, dport = struct.unpack_from("!HH", body)
        return Segment(src, dst, UDP, sport, dport, 0, 0, 0, body[8:])
    if protocol in (ICMP, ICMPV6) and len(body) >= 8:
        words = int.from_bytes(body, "big") * odd
        if protocol == ICMPV6:
            words += int.from_bytes(src + dst, "big") + ICMPV6 + len(body)
        if internet_checksum(words) != 0:
            return None
        kind, _, _, ident, seq = struct.unpack_from("!BBHHH", body)
        return Segment(src, dst, protocol, ident, seq, 0, 0, kind, body[8:])
    return None


# -- the network -----------------------------------------------------------------

# NamedTuple's own constructor is a Python function: this builds one at C speed
# from a tuple of every field, in the hot paths where a packet is made.
_new_tuple = tuple.__new__


class _Packet(NamedTuple):
    raw: bytes
    address: Address
    segment: Segment          # what the sender meant; reused when the bytes reach the peer unchanged


class DemoBackend(Backend):
    name = "demo"

    def __init__(self, seed: int = 0, rate: float = 1000.0,
                 clock: Callable[[], int] = time.monotonic_ns,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.seed = seed
        self._rng = random.Random(seed)
        self._clock = clock
        self._sleep = sleep
        self.rate = 0.0
        self.set_rate(rate)
        self._filter = None
        self._flags = 0
        self._layer = Layer.NETWORK
        self._open = False
        self._recv_open = False
        self._send_open = False
        self._queue: collections.deque[tuple[Captured, int]] = collections.deque()
        self._pending: dict[int, _Packet] = {}
        self._next_ticket = 1
        self._events: list = []
        self._event_seq = 0
        self.now = 0        # the network's time: the event being played, or the clock when idle
        self._next_start = 0
        self._flows: dict[tuple, object] = {}
        self._next_port = 32768 + self._rng.randrange(20000)
        self._ident = self._rng.randrange(65536)
        self._queue_length = PARAM_LIMITS[Param.QUEUE_LENGTH][0]
        self._queue_time_ns = PARAM_LIMITS[Param.QUEUE_TIME][0] * 1_000_000
        self.received: collections.deque[bytes] = collections.deque(maxlen=256)
        self._stats = collections.Counter()
        self._hosts_by_addr = {}
        self._place_hosts(Layer.NETWORK)

    # -- Backend ----------------------------------------------------------------

    def open(self, filter, layer: Layer, priority: int, flags: Flag, params: dict[Param, int]) -> None:
        if self._open:
            raise RuntimeError("demo backend: already open")
        if layer not in (Layer.NETWORK, Layer.NETWORK_FORWARD):
            raise ValueError(f"demo backend: layer {Layer(layer).name} carries no packets")
        self._filter = None if filter is None or getattr(filter, "text", None) == "true" else filter
        self._flags = int(flags)
        self._layer = Layer(layer)
        self._place_hosts(self._layer)
        for param, value in (params or {}).items():
            self.set_param(param, value)
        self.now = self._clock()
        self._next_start = self.now
        self._open = self._recv_open = self._send_open = True

    def set_rate(self, rate: float) -> None:
        if not 0 <= rate <= MAX_RATE:
            raise ValueError(f"demo rate must be between 0 and {MAX_RATE} packets per second, not {rate}")
        self.rate = float(rate)

    def set_param(self, param: Param, value: int) -> None:
        if param == Param.QUEUE_LENGTH:
            self._queue_length = int(value)
        elif param == Param.QUEUE_TIME:
            self._queue_time_ns = int(value) * 1_000_000

    def recv_batch(self, max_count: int, timeout: float | None) -> list[Captured]:
        if not self._open:
            raise RuntimeError("demo backend: recv on a closed backend")
        deadline = None if timeout is None else self._clock() + int(timeout * 1e9)
        queue = self._queue
        while True:
            now = self._clock()
            self._run_until(now, max_count)
            self._expire(self.now)
            late = not self._recv_open or (deadline is not None and now >= deadline)
            # Like a NIC's interrupt coalescing: a packet waits up to BATCH_WAIT_NS
            # for company, so that a busy network is read in batches.
            if queue and (late or len(queue) >= max_count or now - queue[0][1] >= BATCH_WAIT_NS):
                return [queue.popleft()[0] for _ in range(min(max_count, len(queue)))]
            if late:
                return []
            wake = self._events[0][0] if self._events else now + 5_000_000
            if self.rate and self._next_start < wake:
                wake = self._next_start
            if queue:
                wake = min(wake, queue[0][1] + BATCH_WAIT_NS)
            if deadline is not None:
                wake = min(wake, deadline)
            self._sleep(min(max(wake - now, 0), 5_000_000) / 1e9)

    def verdict(self, ticket: int, raw: bytes | None) -> None:
        packet = self._pending.pop(ticket, None)
        if packet is None:
            raise KeyError(f"demo backend: no packet waits for a verdict under ticket {ticket} "
                           "(already released, expired or overflowed)")
        if raw is None:
            self._stats["dropped"] += 1
            return
        if not self._send_open:
            self._stats["send_refused"] += 1
            return
        self._stats["released"] += 1
        self._deliver(raw, packet)

    def verdict_many(self, verdicts: list[tuple[int, bytes | None]]) -> None:
        """verdict() for each (ticket, raw) in turn; a released packet whose bytes are unchanged skips the checks."""
        pending, deliver, stats = self._pending, self._deliver, self._stats
        for ticket, raw in verdicts:
            packet = pending.get(ticket)
            if packet is not None and raw is packet.raw and self._send_open:
                del pending[ticket]
                stats["released"] += 1
                deliver(raw, packet)
            else:
                self.verdict(ticket, raw)

    def inject(self, raw: bytes, address: Address) -> None:
        if not self._send_open:
            raise RuntimeError("demo backend: sending was shut down")
        self._stats["injected"] += 1
        self._deliver(bytes(raw), None)

    def shutdown(self, how: str) -> None:
        if how not in ("recv", "send", "both"):
            raise ValueError(f"shutdown how must be 'recv', 'send' or 'both', not {how!r}")
        if how in ("recv", "both"):
            self._recv_open = False
        if how in ("send", "both"):
            self._send_open = False

    def close(self) -> None:
        # Packets still waiting for a verdict continue as if never diverted.
        for packet in list(self._pending.values()):
            self._deliver(packet.raw, packet)
        self._pending.clear()
        self._queue.clear()
        self._open = False

    def stats(self) -> dict[str, int]:
        return dict(self._stats, queued=len(self._queue), pending=len(self._pending),
                    flows=len(self._flows))

    # -- the divert point ---------------------------------------------------------

    def _cross(self, packet: _Packet) -> None:
        self._stats["generated"] += 1
        flags = self._flags
        if self._recv_open and not flags & _SEND_ONLY and (
                self._filter is None or self._filter.match(packet.raw, packet.address)):
            if flags & _DROP:
                self._stats["filter_dropped"] += 1
                return
            if len(self._queue) >= self._queue_length:
                self._stats["overflowed"] += 1
                if not flags & _SNIFF:
                    return
            elif flags & _SNIFF:
                self._stats["sniffed"] += 1
                self._queue.append((Captured(packet.raw, packet.address.copy(sniffed=True), 0), self.now))
            else:
                self._stats["diverted"] += 1
                ticket = self._next_ticket
                self._next_ticket += 1
                self._pending[ticket] = packet
                self._queue.append((_new_tuple(Captured, (packet.raw, packet.address, ticket)), self.now))
                return
        self._deliver(packet.raw, packet)

    def _expire(self, now: int) -> None:
        queue = self._queue
        while queue and now - queue[0][1] > self._queue_time_ns:
            captured, _ = queue.popleft()
            self._stats["expired"] += 1
            if captured.ticket:
                self._pending.pop(captured.ticket, None)

    def _deliver(self, raw: bytes, packet: _Packet | None) -> None:
        """The receiving host gets `raw`; bytes as sent skip reparsing."""
        self.received.append(raw)
        if packet is not None and raw == packet.raw:
            segment = packet.segment
        else:
            segment = parse_segment(raw)
            if segment is None:
                self._stats["discarded"] += 1
                return
        host = self._hosts_by_addr.get(segment.dst)
        if host is None:
            self._stats["unrouted"] += 1
            return
        flow = self._flows.get((segment.dst, segment.protocol, segment.dport, segment.src, segment.sport))
        if flow is None and segment.protocol in (ICMP, ICMPV6):
            flow = self._flows.get((segment.dst, segment.protocol, segment.sport, segment.src, 0))
        if flow is not None:
            flow.receive(segment, host)
        else:
            self._unsolicited(segment, host)

    def _unsolicited(self, s: Segment, host: Host) -> None:
        """A packet no flow expects: servers accept, echo requests are answered, the rest is refused."""
        at = self.now + host.delay_ns
        if s.protocol in (ICMP, ICMPV6):
            if s.flags in (8, 128):
                self.send_at(at, echo_packet(s.dst, s.src, True, s.sport, s.dport, s.payload),
                             s._replace(src=s.dst, dst=s.src, flags=0 if s.flags == 8 else 129))
            return
        service = _SERVICES.get((host.name, s.protocol, s.dport))
        if s.protocol == TCP:
            if service is not None and s.flags & (SYN | ACK | RST) == SYN:
                _TcpEnd.accept(self, s, host, service)
            elif not s.flags & RST:
                ack_flags = RST if s.flags & ACK else RST | ACK
                seq = s.ack if s.flags & ACK else 0
                ack = s.seq + len(s.payload) + (1 if s.flags & SYN else 0) + (1 if s.flags & FIN else 0)
                self.send_at(at, tcp_packet(s.dst, s.src, s.dport, s.sport, seq, ack, ack_flags),
                             Segment(s.dst, s.src, TCP, s.dport, s.sport, seq, ack, ack_flags, b""))
        elif s.protocol == UDP:
            if service is not None:
                answer = service(self, s.payload)
                if answer is not None:
                    self.send_at(at, udp_packet(s.dst, s.src, s.dport, s.sport, answer),
                                 Segment(s.dst, s.src, UDP, s.dport, s.sport, 0, 0, 0, answer))
            else:
                self._stats["port_unreachable"] += 1

    # -- scheduling ---------------------------------------------------------------

    def send_at(self, at: int, raw: bytes, segment: Segment) -> None:
        route = self._routes.get((segment.src, segment.dst))
        if route is None:
            route = self._routes[segment.src, segment.dst] = self._route(segment.src, segment.dst)
        outbound, loopback, ipv6, if_idx = route
        address = Address(outbound, loopback, False, ipv6, if_idx, 0, at, False, self._layer)
        self._event_seq += 1
        packet = _new_tuple(_Packet, (raw, address, segment))
        heapq.heappush(self._events, (at, self._event_seq, self._cross, (packet,)))

    def _route(self, src: bytes, dst: bytes) -> tuple[bool, bool, bool, int]:
        """(outbound, loopback, ipv6, if_idx) of the packets from src to dst."""
        source = self._hosts_by_addr[src]
        dest = self._hosts_by_addr.get(dst)
        loopback = source.local and dest is not None and dest.local
        return (source.local and self._layer == Layer.NETWORK, loopback, len(src) == 16,
                IF_LOOPBACK if loopback else IF_LAN)

    def call_at(self, at: int, function, *args) -> None:
        self._event_seq += 1
        heapq.heappush(self._events, (at, self._event_seq, function, args))

    def _run_until(self, now: int, enough: int) -> None:
        """Play the network up to `now`.

        Once `enough` packets wait to be read, the network may fall up to
        MAX_LAG_NS behind the clock: a reader a little slower than the
        traffic slows the simulation down; a reader further behind sees the
        queue overflow, as it would on a real handle.
        """
        events, queue = self._events, self._queue
        rate = self.rate
        if rate and self._next_start < now - MAX_CATCH_UP_NS:
            self._next_start = now - MAX_CATCH_UP_NS
        # A reader that falls behind slows the start of new conversations
        # rather than making every flow retransmit into a full queue.
        starts_allowed = self._queue_length // 2
        heappop, lag_limit = heapq.heappop, now - MAX_LAG_NS
        while True:
            if len(queue) >= enough and self.now >= lag_limit:
                return
            next_event = events[0][0] if events else now + 1
            next_start = self._next_start
            if rate and next_start <= now and next_start <= next_event and len(queue) < starts_allowed:
                self.now = next_start
                mean_packets = _start_conversation(self)
                self._next_start = next_start + int(self._rng.expovariate(rate / mean_packets) * 1e9) + 1
                continue
            if next_event > now:
                break
            at, _, function, args = heappop(events)
            self.now = at
            function(*args)
        self.now = now

    # -- helpers for flows ----------------------------------------------------------

    @property
    def rng(self) -> random.Random:
        return self._rng

    def count(self, name: str) -> None:
        self._stats[name] += 1

    def ephemeral_port(self) -> int:
        self._next_port = 32768 + (self._next_port - 32768 + 1) % 28232
        return self._next_port

    def next_ident(self) -> int:
        self._ident = (self._ident + 1) & 0xFFFF
        return self._ident

    def bind(self, key: tuple, flow) -> None:
        self._flows[key] = flow

    def unbind(self, key: tuple) -> None:
        self._flows.pop(key, None)

    def _place_hosts(self, layer: Layer) -> None:
        self.client = LAN_CLIENT if layer == Layer.NETWORK_FORWARD else HOSTS[0]
        hosts = HOSTS[2:] + (self.client,) + (() if layer == Layer.NETWORK_FORWARD else HOSTS[1:2])
        self._hosts_by_addr = {addr: host for host in hosts for addr in (host.v4, host.v6)}
        self._routes: dict[tuple[bytes, bytes], tuple[bool, bool, bool, int]] = {}
        self.hosts = {host.name: host for host in hosts}


# -- TCP -------------------------------------------------------------------------

class _TcpEnd:
    """One side of a TCP connection: handshake, cumulative ACKs, retransmission, FIN."""

    def __init__(self, net: DemoBackend, host: Host, local: bytes, lport: int, remote: bytes, rport: int,
                 app) -> None:
        self.net, self.host, self.app = net, host, app
        self.local, self.lport, self.remote, self.rport = local, lport, remote, rport
        self.iss = net.rng.getrandbits(32)
        self.snd_una = self.snd_nxt = self.iss
        self.rcv_nxt = 0
        self.synchronised = False
        self.unacked: list[tuple[int, int, bytes]] = []      # (seq, flags, payload)
        self.deadline: int | None = None     # when the retransmission timer expires; None: off
        self.alarm: int | None = None        # the earliest wake-up queued for it
        self.retries = 0
        self.fin_sent = self.fin_received = self.closed = False
        self.key = (local, TCP, lport, remote, rport)
        self.bytes = TcpFlowBytes(local, remote, lport, rport)
        net.bind(self.key, self)

    @classmethod
    def connect(cls, net: DemoBackend, host: Host, local: bytes, remote: bytes, rport: int, app) -> "_TcpEnd":
        end = cls(net, host, local, net.ephemeral_port(), remote, rport, app)
        end.send(SYN, b"", net.now)
        return end

    @classmethod
    def accept(cls, net: DemoBackend, s: Segment, host: Host, service) -> None:
        end = cls(net, host, s.dst, s.dport, s.src, s.sport, service(net))
        end.rcv_nxt = (s.seq + 1) & 0xFFFFFFFF
        end.synchronised = True
        end.send(SYN | ACK, b"", net.now + host.delay_ns)

    def send(self, flags: int, payload: bytes, at: int) -> None:
        seq = self.snd_nxt
        length = len(payload) + (1 if flags & (SYN | FIN) else 0)
        if length:
            self.unacked.append((seq, flags, payload))
            self.snd_nxt = (seq + length) & 0xFFFFFFFF
            self._arm(at)
        self._emit(seq, flags, payload, at)

    def _emit(self, seq: int, flags: int, payload: bytes, at: int) -> None:
        ack = self.rcv_nxt if flags & ACK or not flags & SYN else 0
        if not flags & SYN or flags & ACK:
            flags |= ACK
        raw = self.bytes.packet(seq, ack, flags, payload, self.net.next_ident())
        self.net.send_at(at, raw, _new_tuple(Segment, (self.local, self.remote, TCP, self.lport, self.rport,
                                                       seq, ack, flags, payload)))

    def _arm(self, at: int) -> None:
        # Each segment sent re-arms the timer; a queued wake-up that comes
        # before the deadline goes back to sleep until it, so there is one
        # event per timer period rather than one per segment.
        deadline = self.deadline = at + (RTO_NS << min(self.retries, 5))
        if self.alarm is None or deadline < self.alarm:
            self.alarm = deadline
            self.net.call_at(deadline, self._wake, deadline)

    def _wake(self, alarm: int) -> None:
        if alarm != self.alarm:
            return          # an earlier wake-up took its place
        self.alarm = None
        deadline = self.deadline
        if deadline is None or self.closed:
            return
        if self.net.now < deadline:
            self.alarm = deadline
            self.net.call_at(deadline, self._wake, deadline)
            return
        self._timeout()

    def _timeout(self) -> None:
        if not self.unacked:
            return
        self.retries += 1
        if self.retries > MAX_RETRIES:
            self.net.count("tcp_gave_up")
            self._close()
            return
        # Go-back-N: the receiver keeps no out-of-order data.
        for i, (seq, flags, payload) in enumerate(self.unacked):
            self.net.count("retransmitted")
            self._emit(seq, flags, payload, self.net.now + i * SEGMENT_GAP_NS)
        self._arm(self.net.now)

    def receive(self, s: Segment, host: Host) -> None:
        at = self.net.now + host.delay_ns
        if s.flags & RST:
            self._close()
            return
        if s.flags & ACK:
            self._acked(s.ack, at)
        if s.flags & SYN:
            if s.flags & ACK and not self.synchronised:
                self.synchronised = True
                self.rcv_nxt = (s.seq + 1) & 0xFFFFFFFF
                self._emit(self.snd_nxt, ACK, b"", at)
                self._deliver_app(None, at)
            elif s.flags & ACK:
                self._emit(self.snd_nxt, ACK, b"", at)          # our ACK of their SYN was lost
            elif (s.seq + 1) & 0xFFFFFFFF == self.rcv_nxt:
                self._emit(self.snd_una, SYN | ACK, b"", at)    # our SYN-ACK was lost
            return
        if s.payload or s.flags & FIN:
            if s.seq != self.rcv_nxt:
                self._emit(self.snd_nxt, ACK, b"", at)         # out of order: a duplicate ACK
                return
            self.rcv_nxt = (self.rcv_nxt + len(s.payload)) & 0xFFFFFFFF
            if s.flags & FIN:
                self.rcv_nxt = (self.rcv_nxt + 1) & 0xFFFFFFFF
                self.fin_received = True
            sent_before = self.snd_nxt
            if s.payload:
                self._deliver_app(s, at)
            if self.fin_received and not self.fin_sent:
                self.fin_sent = True
                self.send(FIN, b"", at + SEGMENT_GAP_NS)
            elif self.snd_nxt == sent_before:
                self._emit(self.snd_nxt, ACK, b"", at)
        if self.fin_sent and self.fin_received and not self.unacked:
            self._close()

    def _acked(self, ack: int, at: int) -> None:
        advanced = (ack - self.snd_una) & 0xFFFFFFFF
        if not advanced or advanced > (self.snd_nxt - self.snd_una) & 0xFFFFFFFF:
            return
        self.snd_una = ack
        if ack == self.snd_nxt:
            self.unacked = []
        else:
            self.unacked = [u for u in self.unacked
                            if 0 < (u[0] + len(u[2]) + (1 if u[1] & (SYN | FIN) else 0) - ack) & 0xFFFFFFFF
                            <= 0x7FFFFFFF]
        self.retries = 0
        if self.unacked:
            self._arm(at)
        else:
            self.deadline = None

    def _deliver_app(self, s: Segment | None, at: int) -> None:
        replies = self.app.on_data(s.payload if s else None, bool(s and s.flags & PSH))
        for i, (payload, final) in enumerate(replies):
            self.send(PSH if final else 0, payload, at + i * SEGMENT_GAP_NS)
        if self.app.done and not self.fin_sent:
            self.fin_sent = True
            self.send(FIN, b"", at + len(replies) * SEGMENT_GAP_NS)

    def _close(self) -> None:
        self.closed = True
        self.deadline = None
        self.net.unbind(self.key)


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

def _dns_name(name: str) -> bytes:
    return b"".join(bytes((len(p),)) + p.encode() for p in name.split(".")) + b"\0"


def dns_query(ident: int, name: str, qtype: int) -> bytes:
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + _dns_name(name) + struct.pack("!HH", qtype, 1)


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


_SERVICES = {
    ("web", TCP, 80): _HttpServer, ("cdn", TCP, 80): _HttpServer, ("loopback", TCP, 8080): _HttpServer,
    ("web", TCP, 443): _TlsServer, ("cdn", TCP, 443): _TlsServer, ("peer", TCP, 443): _TlsServer,
    ("resolver", UDP, 53): _dns_answer,
    ("web", UDP, 443): _quic_answer, ("cdn", UDP, 443): _quic_answer,
}


def _start_conversation(net: DemoBackend) -> float:
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
            _TcpEnd.connect(net, client, addr("loopback"), addr("loopback"), 8080, _Client([request]))
        else:
            _TcpEnd.connect(net, client, local, addr(rng.choice(("web", "cdn"))), 80, _Client([request]))
    elif kind < 0.70:
        requests = [_client_hello(rng, rng.choice(NAMES)),
                    _tls_record(0x14, 1, rng) + _tls_record(0x17, 40 + rng.randrange(400), rng)]
        _TcpEnd.connect(net, client, local, addr(rng.choice(("web", "cdn", "peer"))), 443, _Client(requests))
    elif kind < 0.85:
        datagrams = [_quic_initial(rng)] + [bytes((0x40,)) + rng.randbytes(8 + 20 + rng.randrange(200))
                                            for _ in range(1 + rng.randrange(5))]
        _UdpExchange(net, client, local, addr(rng.choice(("web", "cdn"))), 443, datagrams, 1, 300_000_000)
    else:
        _Ping(net, client, local, addr(rng.choice(("gateway", "web", "peer"))), 1 + rng.randrange(4))
    return 8.7
