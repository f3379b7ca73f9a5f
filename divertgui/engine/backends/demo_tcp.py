"""One end of a TCP connection on the demo network: handshake, cumulative
ACKs, retransmission and FIN, driving an application's replies."""

from __future__ import annotations

from typing import TYPE_CHECKING

from divertgui.engine.backends.demo_hosts import Host
from divertgui.engine.backends.demo_packets import ACK, FIN, PSH, RST, SYN, TCP, Segment, TcpFlowBytes

if TYPE_CHECKING:
    from divertgui.engine.backends.demo import DemoBackend

SEGMENT_GAP_NS = 15_000
RTO_NS = 200_000_000
MAX_RETRIES = 6

# NamedTuple's own constructor is a Python function: this builds one at C speed
# from a tuple of every field, in the hot paths where a packet is made.
_new_tuple = tuple.__new__


class TcpEnd:
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
    def connect(cls, net: DemoBackend, host: Host, local: bytes, remote: bytes, rport: int, app) -> "TcpEnd":
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
