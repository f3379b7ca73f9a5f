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
import random
import time
from typing import Callable, NamedTuple

from divertgui.engine.address import PARAM_LIMITS, Address, Event, Flag, Layer, Param
from divertgui.engine.backends.base import Backend, Captured
from divertgui.engine.backends.demo_hosts import HOSTS, LAN_CLIENT, LOCAL_DELAY_NS, NAMES, Host
from divertgui.engine.backends.demo_packets import (ACK, FIN, ICMP, ICMPV6, PSH, RST, SYN, TCP, UDP, Segment,
                                                    TcpFlowBytes, dns_query, echo_packet, ip_packet, parse_segment,
                                                    tcp_packet, udp_packet)
from divertgui.engine.backends.demo_services import SERVICES, start_conversation
from divertgui.engine.backends.demo_tcp import MAX_RETRIES, RTO_NS, SEGMENT_GAP_NS, TcpEnd
from divertgui.engine.replies import reset_numbers

# The packet builders and hosts are read from here as well as from their own modules.
__all__ = [
    "DemoBackend", "MAX_RATE", "MAX_CATCH_UP_NS", "MAX_LAG_NS", "BATCH_WAIT_NS", "IF_LOOPBACK", "IF_LAN",
    "Host", "HOSTS", "LAN_CLIENT", "NAMES", "LOCAL_DELAY_NS", "SEGMENT_GAP_NS", "RTO_NS", "MAX_RETRIES",
    "TCP", "UDP", "ICMP", "ICMPV6", "FIN", "SYN", "RST", "PSH", "ACK",
    "ip_packet", "tcp_packet", "TcpFlowBytes", "udp_packet", "echo_packet", "dns_query", "Segment", "parse_segment",
]

MAX_RATE = 50_000
# After a stall (nobody calling recv), new conversations restart from this far
# back instead of all at once.
MAX_CATCH_UP_NS = 200_000_000
MAX_LAG_NS = 250_000_000
BATCH_WAIT_NS = 6_000_000

IF_LOOPBACK, IF_LAN = 1, 2
# Named as the demo network's, never as this machine's interfaces of the same index.
INTERFACE_NAMES = {IF_LOOPBACK: "demo-lo", IF_LAN: "demo-eth0"}
_SNIFF, _DROP, _SEND_ONLY = int(Flag.SNIFF), int(Flag.DROP), int(Flag.SEND_ONLY)


# NamedTuple's own constructor is a Python function: this builds one at C speed
# from a tuple of every field, in the hot paths where a packet is made.
_new_tuple = tuple.__new__


class _Packet(NamedTuple):
    raw: bytes
    address: Address
    segment: Segment          # what the sender meant; reused when the bytes reach the peer unchanged


class DemoBackend(Backend):
    name = "demo"
    paced = True

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
        self._filter = None if filter is None or filter.text == "true" else filter
        self._flags = int(flags)
        self._layer = Layer(layer)
        self._place_hosts(self._layer)
        for param, value in (params or {}).items():
            self.set_param(param, value)
        self.now = self._clock()
        self._next_start = self.now
        self._open = self._recv_open = self._send_open = True

    def interface_name(self, if_idx: int) -> str | None:
        return INTERFACE_NAMES.get(if_idx)

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
        if self._open and self._flags & _DROP:
            # A DROP handle is never read, so its network plays on when its counts are asked.
            self._run_until(self._clock(), self._queue_length)
        return dict(self._stats, queued=len(self._queue), pending=len(self._pending),
                    flows=len(self._flows))

    # -- the divert point ---------------------------------------------------------

    def _cross(self, packet: _Packet) -> None:
        self._stats["generated"] += 1
        flags = self._flags
        if self._recv_open and not flags & _SEND_ONLY and (
                self._filter is None or self._filter.match(packet.raw, packet.address)):
            if flags & _DROP:
                self._stats["dropped"] += 1     # as a DROP handle's kernel rule counts them
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
        service = SERVICES.get((host.name, s.protocol, s.dport))
        if s.protocol == TCP:
            if service is not None and s.flags & (SYN | ACK | RST) == SYN:
                TcpEnd.accept(self, s, host, service)
            elif not s.flags & RST:
                seq, ack, flags = reset_numbers(s.seq, s.ack, s.flags, len(s.payload))
                self.send_at(at, tcp_packet(s.dst, s.src, s.dport, s.sport, seq, ack, flags),
                             Segment(s.dst, s.src, TCP, s.dport, s.sport, seq, ack, flags, b""))
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
        # The demo hosts' packets carry correct checksums.
        address = Address(outbound, loopback, False, ipv6, if_idx, 0, at, False, self._layer, Event.PACKET,
                          True, True, True)
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
                mean_packets = start_conversation(self)
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
