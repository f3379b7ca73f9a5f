"""Linux backend: netfilter rules send packets to an NFQUEUE (divert), an
NFLOG group (sniff) or DROP; this process reads them over nfnetlink.

Divert mode. Every packet the kernel rule matches is queued; the exact filter
runs here and what it rejects is released at once, in one batch verdict per
run of such packets. Released packets re-run the hook (NF_REPEAT) with this
handle's priority level in the mark, so handles of lower priority see them
next and this one never again. Packets the reader has not taken within
QUEUE_TIME are dropped and counted as expired.

Sniff mode never holds a packet: NFLOG copies it and the original goes on.
Drop mode is a DROP rule when the kernel tests the filter exactly (nothing
crosses to user space); otherwise packets are queued and dropped here.
See driver/README.md for the whole design.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import socket
import sys
import threading
import time

from divertgui.engine import privileges
from divertgui.engine.address import Address, Event, Flag, Layer, Param, PARAM_LIMITS
from divertgui.engine.backends import netfilter_rules, netlink
from divertgui.engine.backends.base import Backend, Captured
from divertgui.engine.backends.inject import RawInjector
from divertgui.engine.backends.ready_signal import ReadySignal
from divertgui.engine.header_fields import IPV4
from divertgui.engine.backends.netfilter_rules import (HandleRules, INJECTED_MARK, LEVEL_MASK, PROC_QUEUES, SUB_MASK,
                                                      SUB_SHIFT, level_mark)
from divertgui.engine.checksum import checksums_valid
from divertgui.engine.errors import (NetfilterError, NetlinkError, PacketCutError, PacketTooLargeError,
                                     PrerequisiteError)

QUEUE_NUMBER_BASE = 0x4000
QUEUE_NUMBER_SPAN = 0x3000
OUTBOUND_HOOKS = (netlink.NF_INET_LOCAL_OUT, netlink.NF_INET_POST_ROUTING)
# Captured is a NamedTuple: building the tuple directly skips its Python-level __new__.
_new_captured = tuple.__new__
_monotonic_ns = time.monotonic_ns
NF_HOOKS = {"P": netlink.NF_INET_PRE_ROUTING, "I": netlink.NF_INET_LOCAL_IN,
            "O": netlink.NF_INET_LOCAL_OUT, "F": netlink.NF_INET_FORWARD}
RULE_HITS_PERIOD = 0.5
# Packets released per verdict by pass_batch: what one recvmmsg call reads.
PASS_CHUNK = 64
# The buffer in which NFLOG gathers copies before it sends them.
LOG_BUFFER_SIZE = 128 * 1024


def _clocks() -> tuple[int, int]:
    """(the monotonic clock now, how far the wall clock is ahead of it), in ns: the kernel
    stamps packets on the wall clock, Address.timestamp is on the monotonic one."""
    now = time.monotonic_ns()
    return now, time.time_ns() - now


def check_prerequisites() -> None:
    if not sys.platform.startswith("linux"):
        raise PrerequisiteError(f"the netfilter backend runs on Linux only, not on {sys.platform}; "
                                f"on Windows use the pydivert backend", "platform")
    if not privileges.may_divert():
        raise PrerequisiteError(privileges.privilege_sentence(), "privilege")


PROC_LOG_GROUPS = "/proc/thread-self/net/netfilter/nfnetlink_log"


def queue_numbers_in_use() -> set[int]:
    """The queue and log group numbers our handles' rules name or a reader has bound, in this
    network namespace."""
    used = {c.queue for c in netfilter_rules.list_handles()}
    return used | bound_numbers(PROC_QUEUES) | bound_numbers(PROC_LOG_GROUPS)


def bound_numbers(path: str) -> set[int]:
    """The numbers a /proc list of bound queues or log groups names (none when it is absent)."""
    try:
        with open(path) as f:
            return {int(line.split()[0]) for line in f if line.strip()}
    except OSError:
        return set()


# The IP version in a packet's first byte, read where each packet passes.
_VERSION_SHIFT = IPV4["version"].shift
_PACKET_EVENT = Event.PACKET
# NFQA_SKB_INFO bits that leave a queued packet's checksums to be checked here.
_CHECKSUM_UNKNOWN = netlink.NFQA_SKB_CSUM_NOTVERIFIED | netlink.NFQA_SKB_CSUMNOTREADY

class NfqueueBackend(Backend):
    name = "nfqueue"
    registered = True
    passes_batches = True
    max_edited_size = netlink.MAX_VERDICT_PAYLOAD
    max_edited_size_reason = "an NFQUEUE verdict (16-bit netlink attribute length)"

    def __init__(self, kernel_prefilter=None, queue: int | None = None):
        # kernel_prefilter(filter, ip_version, hook) -> filter.kernel.KernelTest;
        # hook is a letter of netfilter_rules.HOOKS.
        self.kernel_prefilter = kernel_prefilter
        # A queue of a worker pool (worker_pool.py): this number is bound, and
        # the rules that fill it are the pool's, not this handle's.
        self.assigned_queue = queue
        self.sock: netlink.NetfilterSocket | None = None
        self._ready_signal: ReadySignal | None = None
        self.rules: HandleRules | None = None
        self.injector: RawInjector | None = None
        self.mode = self.action = "divert"
        self.queue = 0
        self.counters = collections.Counter()
        self._ready: collections.deque = collections.deque()     # (NetfilterPacket, Address) passed the filter
        self._ready_bytes = 0                                    # what _ready holds, capped by QUEUE_SIZE
        self._readers = 0
        self._last_read = 0.0       # time.monotonic() when a reader last left recv
        self._sniffing = False
        self._pending: dict[int, netlink.NetfilterPacket] = {}   # ticket -> the packet as received
        self._next_id = 0
        self._next_log_seq = 0
        self._lock = threading.RLock()
        self._closed = threading.Event()
        self._sifter: threading.Thread | None = None
        self._recv_open = self._send_open = True
        self._lo_index = 1
        self._rule_hits = 0
        self._rule_hits_at = -RULE_HITS_PERIOD
        self._final_kernel_counts: dict[str, int] = {}
        self._proc_queues = None
        self._exact_at: set[tuple[int, int]] = set()   # (IP version, NF hook) the kernel tests exactly
        self._summary = netlink.QueuedPacketSummary()
        self._parse_queued = netlink.QueuedPacketParser()
        self._forwarding = False    # a NETWORK_FORWARD handle
        self._columns = netlink.QueuedBatchColumns()
        self._ordinal_bits = 0      # this handle's ordinal in its priority level, in place in the mark

    # -- opening -------------------------------------------------------------

    def open(self, filter, layer: Layer, priority: int, flags: Flag, params: dict[Param, int]) -> None:
        check_prerequisites()
        self.filter = filter
        self.match_all = filter.text.strip() == "true"
        self.layer, self.priority, self.flags = layer, priority, flags
        self._forwarding = layer == Layer.NETWORK_FORWARD
        self.params = {p: params.get(p, limits[0]) for p, limits in PARAM_LIMITS.items()}
        self.level_mark = level_mark(priority)
        self.injector = RawInjector(priority)
        try:
            self._lo_index = socket.if_nametoindex("lo")
        except OSError:
            pass
        self.mode = "drop" if flags & Flag.DROP else "sniff" if flags & Flag.SNIFF else "divert"
        self._sniffing = self.mode == "sniff"
        netfilter_rules.cleanup(dead_only=True)
        if flags & Flag.SEND_ONLY:
            return
        if layer == Layer.NETWORK_FORWARD:
            hooks = "F"
        else:
            hooks = ("P" if flags & Flag.FRAGMENTS else "I") + "O"
        exact, kernel_match = self.match_all, None
        if self.kernel_prefilter is not None and not self.match_all:
            tests = {(version, hook): self.kernel_prefilter(filter, version, hook)
                     for version in (4, 6) for hook in hooks}
            exact = all(test.exact for test in tests.values())
            kernel_match = lambda version, hook: tests[version, hook].match  # noqa: E731
            self._exact_at = {(version, NF_HOOKS[hook]) for (version, hook), test in tests.items() if test.exact}
        # A DROP handle whose filter the kernel cannot test exactly has its
        # packets queued and dropped here, the rest released at once.
        self.action = "divert" if self.mode == "drop" and not exact else self.mode
        # What the kernel tests exactly need not be tested again here.
        self.match_all = exact
        if self.action == "drop":
            self.queue = self._free_number_for_drop()
        else:
            if self.mode == "sniff":
                # NFLOG packs many copies into one datagram; the kernel fills the
                # buffer it asked for up to its allocation size, which is rounded
                # up to a power of two: at most twice LOG_BUFFER_SIZE.
                self.sock = netlink.NetfilterSocket(self._receive_buffer_size(), 2 * LOG_BUFFER_SIZE + 4096,
                                                    datagrams_per_read=16)
            else:
                self.sock = netlink.NetfilterSocket(self._receive_buffer_size())
            self._ready_signal = ReadySignal(self.sock.fileno())
            self.queue = self._bind_free_number() if self.assigned_queue is None else self._bind_assigned()
            # Opened now: the file then speaks of this network namespace whichever thread reads it.
            with contextlib.suppress(OSError):
                self._proc_queues = open(PROC_QUEUES)
        try:
            if self.assigned_queue is None:
                self.rules = netfilter_rules.install(
                    HandleRules(os.getpid(), self.queue, priority, self.action, hooks, kernel_match))
                self._ordinal_bits = self.rules.ordinal << SUB_SHIFT
        except Exception as exc:
            self.rules = None
            self.close()
            if isinstance(exc, NetfilterError) and exc.missing_feature:
                raise PrerequisiteError(str(exc), "kernel") from exc
            raise
        if self.action == "divert":
            self._sifter = threading.Thread(target=self._keep_flowing, name=f"divert-queue-{self.queue}", daemon=True)
            self._sifter.start()

    def _receive_buffer_size(self) -> int:
        # Room for a full queue of full-size copies, so the kernel never has to
        # throw away a queued packet's message for lack of socket buffer.
        return max(self.params[Param.QUEUE_SIZE], self.params[Param.QUEUE_LENGTH] * 2048) * 2

    def _candidates(self):
        start = (os.getpid() * 31) % QUEUE_NUMBER_SPAN
        for i in range(QUEUE_NUMBER_SPAN):
            yield QUEUE_NUMBER_BASE + (start + i) % QUEUE_NUMBER_SPAN

    def _in_use(self) -> set[int]:
        return queue_numbers_in_use()

    def _free_number_for_drop(self) -> int:
        used = self._in_use()
        return next(n for n in self._candidates() if n not in used)

    def _bind_free_number(self) -> int:
        used = self._in_use()
        for number in self._candidates():
            if number in used:
                continue
            try:
                if self.mode == "sniff":
                    self._bind_log_group(number)
                else:
                    self._bind_queue(number)
                return number
            except NetlinkError as exc:
                # A queue bound by another socket answers EBUSY; a log group, EPERM (which also
                # means a missing CAP_NET_ADMIN, hence the look at the groups bound).
                if exc.errno == errno.EBUSY or exc.errno == errno.EPERM and self.mode == "sniff" \
                        and number in bound_numbers(PROC_LOG_GROUPS):
                    continue
                raise PrerequisiteError(self._kernel_support_message(exc), "kernel") from exc
        raise PrerequisiteError("no free NFQUEUE number left between "
                                f"{QUEUE_NUMBER_BASE} and {QUEUE_NUMBER_BASE + QUEUE_NUMBER_SPAN - 1}", "kernel")

    def join_pool(self, ordinal: int) -> None:
        """A worker of a pool: the pool's rules were installed with this ordinal, which
        the marks of this handle's verdicts carry (see netfilter_rules)."""
        self._ordinal_bits = ordinal << SUB_SHIFT

    def _bind_assigned(self) -> int:
        try:
            self._bind_queue(self.assigned_queue)
        except NetlinkError as exc:
            raise PrerequisiteError(self._kernel_support_message(exc), "kernel") from exc
        return self.assigned_queue

    def _kernel_support_message(self, exc: OSError) -> str:
        module = "nfnetlink_log" if self.mode == "sniff" else "nfnetlink_queue"
        if exc.errno in (errno.ENOENT, errno.EOPNOTSUPP, errno.EPROTONOSUPPORT, errno.EINVAL):
            return (f"the kernel has no {module} support ({exc.strerror}); load it with "
                    f"`modprobe {module}` or use a kernel built with it")
        return f"binding a {module} group failed: {exc.strerror}"

    def _bind_queue(self, number: int) -> None:
        self.sock.request(lambda seq: netlink.queue_config_cmd(number, netlink.NFQNL_CFG_CMD_BIND, seq=seq))
        self._configure_queue(number)

    def _configure_queue(self, number: int) -> None:
        fail_open = bool(self.flags & Flag.FAIL_OPEN)
        self.sock.request(lambda seq: netlink.queue_config_params(
            number, copy_range=netlink.MAX_COPY, max_len=self.params[Param.QUEUE_LENGTH],
            fail_open=fail_open, seq=seq))

    def _bind_log_group(self, number: int) -> None:
        self.sock.request(lambda seq: netlink.log_config_cmd(number, netlink.NFULNL_CFG_CMD_BIND, seq=seq))
        # Copies are flushed every 10 ms or every 64 packets, whichever first,
        # so that one read carries many packets without delaying any of them.
        self.sock.request(lambda seq: netlink.log_config_params(
            number, copy_range=netlink.MAX_COPY, buffer_size=LOG_BUFFER_SIZE, flush_centiseconds=1,
            threshold=64, seq=seq))

    # -- receiving -----------------------------------------------------------

    def fileno(self) -> int | None:
        return self._ready_signal.fileno() if self._ready_signal is not None else None

    def _drain(self, limit: int) -> None:
        """Read what the socket holds, run the exact filter, release what it rejects."""
        parse = netlink.parse_log_packet if self.mode == "sniff" else self._parse_queued
        packets = self.sock.read_messages(parse, limit)
        if not packets:
            return
        now, real_offset = _clocks()
        releases: list[tuple[int, int]] = []
        drops: list[int] = []
        keep = self._ready.append
        exact_everywhere, exact_at = self.match_all, self._exact_at
        dropping = self.mode == "drop"
        address_of = self._address_of
        for packet in packets:
            packet_id, hook, mark, payload = packet[0], packet[2], packet[3], packet[7]
            if packet_id:
                if packet_id != self._next_id:
                    self._note_id_gap(packet_id)
                self._next_id = packet_id + 1
            elif packet.log_seq >= 0:
                self._note_log_seq(packet.log_seq)
            address = address_of(packet, now, real_offset)
            ipv6 = address.ipv6
            if (not exact_everywhere and (6 if ipv6 else 4, hook) not in exact_at
                    and not self._matches(payload, address)):
                self.counters["rejected"] += 1
                if packet_id:
                    releases.append((packet_id, self._rejected_mark(mark)))
                continue
            if dropping:
                drops.append(packet_id)
                continue
            keep((packet, address))
            self._ready_bytes += len(payload)
        if self._ready_bytes > self.params[Param.QUEUE_SIZE]:
            self._overflow()
        # Drops first: a batch verdict among the releases may cover their ids.
        if drops:
            self.sock.send(b"".join(netlink.verdict(self.queue, i, netlink.NF_DROP) for i in drops))
            self.counters["dropped"] += len(drops)
        if releases:
            self._release(releases)

    def _overflow(self) -> None:
        """Drop the oldest unread packets until what is queued fits QUEUE_SIZE.

        WinDivert does the same when "the maximum number of bytes that can
        be stored in the packet queue" is reached; the drops are counted as
        overflowed.
        """
        limit, ready = self.params[Param.QUEUE_SIZE], self._ready
        dropped = []
        while self._ready_bytes > limit and ready:
            packet, _address = ready.popleft()
            self._ready_bytes -= len(packet[7])
            if packet[0]:
                dropped.append(packet[0])
            self.counters["overflowed"] += 1
        if dropped:
            self.sock.send(b"".join(netlink.verdict(self.queue, i, netlink.NF_DROP) for i in dropped))

    def _address_of(self, packet: netlink.NetfilterPacket, read_ns: int, real_offset: int) -> Address:
        """The packet's address; `read_ns` is when its batch was read and `real_offset` the
        wall clock's lead over the monotonic clock then (_clocks)."""
        if self._forwarding:
            # As WinDivert has it: a forwarded packet is outbound, on the interface it leaves by.
            outbound, if_idx = True, packet.outdev
        else:
            outbound = packet.hook in OUTBOUND_HOOKS
            if_idx = packet.outdev if outbound else packet.indev
        payload = packet.payload
        if outbound and not self._sniffing:
            # Without NFQA_CFG_F_GSO the kernel completes partial checksums
            # before queueing, and the IP header checksum of a packet this
            # host sends is computed before the hooks.
            ip_ok = tcp_ok = udp_ok = True
        elif not (self._sniffing or packet.skb_info & _CHECKSUM_UNKNOWN or packet.mark & LEVEL_MASK):
            # An arriving packet's IPv4 header checksum was checked on arrival
            # (packets failing it are dropped before the hooks), and the kernel
            # says NFQA_SKB_CSUM_NOTVERIFIED unless its transport checksum was
            # verified (by the device, or conntrack) or was a partial one of
            # this host's that it has completed. A packet a higher-priority
            # handle released may carry an edit the kernel's answer predates.
            ip_ok = tcp_ok = udp_ok = True
        else:
            # NFLOG copies a packet of this host before its offloaded checksums
            # are filled in (CHECKSUM_PARTIAL) and says nothing of checksums.
            ip_ok, tcp_ok, udp_ok = checksums_valid(payload)
        kernel_time = packet.timestamp
        if kernel_time is None:
            # Not stamped by the kernel (see driver/README.md): the time this packet is read.
            stamp = _monotonic_ns()
        else:
            # The kernel's wall-clock stamp on the monotonic clock; never later than the read,
            # should the wall clock have been set back since.
            stamp = min(kernel_time[0] * 1_000_000_000 + kernel_time[1] * 1000 - real_offset, read_ns)
        # Positional, in Address's field order: this runs once per packet.
        return Address(outbound, outbound and if_idx == self._lo_index, bool(packet.mark & INJECTED_MARK),
                       bool(payload) and payload[0] >> _VERSION_SHIFT == 6, if_idx, 0, stamp, self._sniffing,
                       self.layer, _PACKET_EVENT, ip_ok, tcp_ok, udp_ok)

    def _note_id_gap(self, packet_id: int) -> None:
        # Queue ids go up by one per queued packet. A gap is a message the
        # kernel could not deliver (our socket buffer was full): the kernel
        # already dropped that packet (counted by it as user_dropped) or, in
        # fail-open mode, let it through, which only we can count.
        expected = self._next_id
        if expected and packet_id > expected:
            lost = packet_id - expected
            self.counters["lost_messages"] += lost
            if self.flags & Flag.FAIL_OPEN:
                self.counters["bypassed"] += lost

    def _note_log_seq(self, sequence: int) -> None:
        # Copies the kernel could not deliver (socket buffer full) leave gaps.
        if sequence > self._next_log_seq:
            self.counters["sniff_lost"] += sequence - self._next_log_seq
        self._next_log_seq = sequence + 1

    def recv_batch(self, max_count: int, timeout: float | None) -> list[Captured]:
        return self._receive(lambda: self._take_ready(max_count), timeout, [])

    def pass_batch(self, max_count: int, timeout: float | None) -> int:
        """Receive up to max_count diverted packets and release them unchanged; how many.

        What verdicts for recv_batch's packets with their bytes as received
        would do, without building the packets: only each packet's id and
        mark are read. Sniffed copies are only counted.
        """
        if self.mode == "sniff":
            return len(self.recv_batch(max_count, timeout))
        if self.mode != "divert":
            captured = self.recv_batch(max_count, timeout)
            if captured:
                self.verdict_many([(ticket, raw) for raw, _address, ticket in captured])
            return len(captured)
        return self._receive(lambda: self._pass_now(max_count), timeout, 0)

    def _receive(self, take, timeout: float | None, nothing):
        """take() under the lock until it returns something, waiting at most `timeout` seconds."""
        if self.sock is None:
            return nothing
        deadline = None if timeout is None else time.monotonic() + timeout
        looked = False
        with self._lock:
            self._readers += 1
        try:
            while True:
                with self._lock:
                    if self.sock is None:
                        return nothing
                    got = take()
                    self._ready_signal.update(bool(self._ready))
                if got:
                    return got
                if self._closed.is_set():
                    return nothing
                if not self._recv_open:
                    # After shutdown("recv") what was queued stays readable, then recv ends.
                    with self._lock:
                        self._drain(self.params[Param.QUEUE_LENGTH])
                        if not self._ready:
                            return nothing
                    continue
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    if looked:
                        return nothing
                    # One last look at the socket, which also serves a zero timeout
                    # (an event loop's reader saw the socket readable, not this backend).
                    looked, remaining = True, 0
                # Bounded waits so that shutdown() and close() are noticed.
                if not self._wait(0.2 if remaining is None else min(remaining, 0.2)):
                    return nothing
        finally:
            with self._lock:
                self._readers -= 1
                self._last_read = time.monotonic()

    def _take_ready(self, max_count: int) -> list[Captured]:
        if not self._ready and not self.sock.drained:
            self._drain(max(max_count, 64))
        return self._take(max_count)

    def _pass_now(self, max_count: int) -> int:
        if self._ready:
            # Sifted while nobody was reading: those go first, in order.
            captured = self._take(max_count)
            if captured:
                self.verdict_many([(ticket, raw) for raw, _address, ticket in captured])
            return len(captured)
        parse = self._summary if self.match_all else self._summary_or_packet
        passed = 0
        sock = self.sock
        while passed < max_count and not sock.drained:
            # Released as they are read, so that the first packets of a large
            # batch do not wait for the last ones.
            read = sock.read_columns(self._columns, parse, min(PASS_CHUNK, max_count - passed))
            if read.__class__ is tuple:
                if self.match_all or self._exact_for(read[1], read[3]):
                    passed += self._pass_columns(*read)
                    continue
                read = sock.parse_last_read(parse)
            if read:
                passed += self._pass_entries(read)
        return passed

    def _exact_for(self, hooks, first_bytes) -> bool:
        """The kernel tested exactly every packet of these hooks and first bytes (IP versions)."""
        exact_at = self._exact_at
        return all((first >> _VERSION_SHIFT, hook) in exact_at for first in set(first_bytes) for hook in set(hooks))

    def _pass_columns(self, ids, hooks, marks, first_bytes) -> int:
        """Release a read the kernel tested exactly, given as columns: one batch verdict when the
        ids follow on from the last read and the marks agree, as they do in a steady flow."""
        count, first, last = len(ids), ids[0], ids[-1]
        if (first != self._next_id or last - first != count - 1 or marks.count(marks[0]) != count
                or self._ready or (self._pending and min(self._pending) <= last)):
            return self._pass_entries(list(zip(ids, hooks, marks, first_bytes)))
        self._next_id = last + 1
        self.sock.send(netlink.verdict_batch(self.queue, last, netlink.NF_REPEAT,
                                             mark=self._released_mark(marks[0])))
        self.counters["diverted"] += count
        self.counters["sent"] += count
        return count

    def _pass_entries(self, entries: list) -> int:
        """Release what was read; entries are summaries, or whole packets the filter must judge."""
        next_id, rejected_ids = self._next_id, set()
        now, real_offset = _clocks()
        marks = []
        keep = marks.append
        for entry in entries:
            packet_id = entry[0]
            if packet_id != next_id:
                self._next_id = next_id
                self._note_id_gap(packet_id)
            next_id = packet_id + 1
            if entry.__class__ is tuple:
                keep(entry[2])
                continue
            # The kernel could not test this one exactly; the filter decides
            # whether it counts as diverted or rejected (offered to the next
            # handle of this priority level).
            if not self._matches(entry.payload, self._address_of(entry, now, real_offset)):
                rejected_ids.add(packet_id)
            keep(entry.mark)
        self._next_id = next_id
        rejected = len(rejected_ids)
        last, mark = entries[-1][0], marks[0]
        if (not rejected and marks.count(mark) == len(marks) and not self._ready
                and (not self._pending or min(self._pending) > last)):
            self.sock.send(netlink.verdict_batch(self.queue, last, netlink.NF_REPEAT, mark=self._released_mark(mark)))
        else:
            self._release([(entry[0], self._rejected_mark(mark) if entry[0] in rejected_ids
                            else self._released_mark(mark)) for entry, mark in zip(entries, marks)])
        count = len(entries) - rejected
        self.counters["rejected"] += rejected
        self.counters["diverted"] += count
        self.counters["sent"] += count
        return count

    def _summary_or_packet(self, data, body: int, end: int):
        """The summary of a packet the kernel tested exactly, else the whole packet."""
        summary = self._summary(data, body, end)
        if (summary[3] >> _VERSION_SHIFT, summary[1]) in self._exact_at:
            return summary
        return self._parse_queued(data, body, end)

    def _wait(self, seconds: float) -> bool:
        """Wait for the socket to become readable; False once the backend is closed."""
        sock = self.sock
        if sock is None:
            return False
        try:
            sock.wait(seconds)
        except (OSError, ValueError):
            # close() on another thread took the socket away.
            if self._closed.is_set():
                return False
            raise
        return True

    def _take(self, max_count: int) -> list[Captured]:
        self._expire_old()
        ready, pending = self._ready, self._pending
        count = min(max_count, len(ready))
        if not count:
            return []
        take = ready.popleft
        if self.mode == "sniff":
            captured = [_new_captured(Captured, (packet.payload, address, 0))
                        for packet, address in (take() for _ in range(count))]
            self.counters["sniffed"] += count
            self._ready_bytes -= sum(len(c[0]) for c in captured)
            return captured
        captured = []
        keep = captured.append
        taken_bytes = 0
        for _ in range(count):
            packet, address = take()
            packet_id = packet[0]
            pending[packet_id] = packet
            taken_bytes += len(packet[7])
            keep(_new_captured(Captured, (packet[7], address, packet_id)))
        self._ready_bytes -= taken_bytes
        self.counters["diverted"] += count
        return captured

    def _expire_old(self) -> None:
        """Drop diverted packets that waited for a reader longer than QUEUE_TIME."""
        if self.action != "divert" or not self._ready:
            return
        limit = time.monotonic_ns() - self.params[Param.QUEUE_TIME] * 1_000_000
        expired = []
        while self._ready and self._ready[0][1].timestamp < limit:
            packet = self._ready.popleft()[0]
            self._ready_bytes -= len(packet.payload)
            expired.append(packet.packet_id)
        if expired:
            self.sock.send(b"".join(netlink.verdict(self.queue, i, netlink.NF_DROP) for i in expired))
            self.counters["expired"] += len(expired)

    def _matches(self, raw: bytes, address: Address) -> bool:
        try:
            return bool(self.filter.match(raw, address))
        except Exception:
            # The filter contract is never to raise; a packet it cannot judge matches nothing.
            self.counters["filter_errors"] += 1
            return False

    def _keep_flowing(self) -> None:
        """While nobody is inside recv, sift new packets (releasing what the
        filter rejects at once) and expire what waited too long."""
        period = min(self.params[Param.QUEUE_TIME] / 4000, 0.1)
        while not self._closed.is_set():
            # A reader that left recv a moment ago is back soon and reads what came meanwhile;
            # sifting then would only fight it for the interpreter.
            if self._readers or time.monotonic() - self._last_read < period:
                self._closed.wait(period)
            elif not self._wait(period):
                return
            if self._closed.is_set() or not self._lock.acquire(blocking=False):
                continue
            try:
                if self.sock is None:
                    return
                if not self._readers:
                    self._drain(self.params[Param.QUEUE_LENGTH])
                self._expire_old()
                self._ready_signal.update(bool(self._ready))
            except OSError:
                if self._closed.is_set():
                    return
                raise
            finally:
                self._lock.release()

    # -- verdicts ------------------------------------------------------------

    def _released_mark(self, mark: int) -> int:
        """The mark of a packet this handle lets go on to the lower priority levels."""
        return (mark & ~(LEVEL_MASK | SUB_MASK) & 0xFFFFFFFF) | self.level_mark

    def _rejected_mark(self, mark: int) -> int:
        """The mark of a packet this handle's filter rejects: the handles after
        it at the same priority level see it too."""
        return (mark & ~(LEVEL_MASK | SUB_MASK) & 0xFFFFFFFF) | self.level_mark | self._ordinal_bits

    def _release(self, releases: list[tuple[int, int]]) -> None:
        """Let packets go on with the marks given, in as few messages as possible.

        A batch verdict covers every id up to the one named, so it is used
        for a run only when nothing older than the run is still pending.
        """
        oldest_pending = min(self._pending, default=None)
        if self._ready and (oldest_pending is None or self._ready[0][0].packet_id < oldest_pending):
            oldest_pending = self._ready[0][0].packet_id
        parts = []
        run: list[tuple[int, int]] = []

        def flush():
            if not run:
                return
            last_id, mark = run[-1]
            if len(run) > 1 and (oldest_pending is None or oldest_pending > last_id):
                parts.append(netlink.verdict_batch(self.queue, last_id, netlink.NF_REPEAT, mark=mark))
            else:
                parts.extend(netlink.verdict(self.queue, i, netlink.NF_REPEAT, mark=m)
                             for i, m in run)
            run.clear()

        for packet_id, mark in releases:
            if run and run[-1][1] != mark:
                flush()
            run.append((packet_id, mark))
        flush()
        self.sock.send(b"".join(parts))

    def verdict(self, ticket: int, raw: bytes | None) -> None:
        self.verdict_many([(ticket, raw)])

    def verdict_many(self, verdicts: list[tuple[int, bytes | None]]) -> None:
        """Several verdicts, in as few send() calls as fit; all or none of them.

        A packet the verdict cannot carry (PacketTooLargeError, PacketCutError)
        fails the call before anything is taken: every packet of it stays pending."""
        if self.sock is None:
            raise OSError(errno.EBADF, "the handle is closed")
        with self._lock:
            pending = self._pending
            last, mark, uniform = 0, None, True
            # Checked first, taken after: nothing is taken from a batch that fails.
            for ticket, raw in verdicts:
                packet = pending.get(ticket)
                if packet is None:
                    raise KeyError(f"no pending verdict for packet {ticket} on queue {self.queue}")
                original = packet[7]
                if raw is None or raw != original:
                    uniform = False
                    if raw is not None and packet[9] > len(original):
                        raise PacketCutError(ticket, len(original), packet[9])
                    if raw is not None and len(raw) > self.max_edited_size:
                        raise PacketTooLargeError(len(raw), self.max_edited_size, self.max_edited_size_reason)
                elif mark is None:
                    mark = packet[3]
                elif packet[3] != mark:
                    uniform = False
                if ticket > last:
                    last = ticket
                else:
                    # One batch verdict would release them in the kernel's order, not this one.
                    uniform = False
            if len(verdicts) > 1 and len({ticket for ticket, _raw in verdicts}) != len(verdicts):
                raise ValueError("the same packet appears twice in one batch of verdicts")
            taken = [pending.pop(ticket) for ticket, _raw in verdicts]
            if uniform and len(taken) > 1 and self._nothing_older_than(last):
                # Every packet the kernel holds for us up to `last` is in this batch, unmodified.
                message = netlink.verdict_batch(self.queue, last, netlink.NF_REPEAT, mark=self._released_mark(mark))
                self.counters["sent"] += len(taken)
                self.sock.send(message)
            else:
                self.sock.send_messages(self._verdict_messages([(ticket, raw, packet)
                                                                for (ticket, raw), packet in zip(verdicts, taken)]))

    def _nothing_older_than(self, packet_id: int) -> bool:
        """No packet with a lower id is still pending here or waiting to be read."""
        ready = self._ready
        if ready and ready[0][0][0] < packet_id:
            return False
        return not self._pending or min(self._pending) > packet_id

    def _verdict_messages(self, entries) -> list[bytes]:
        """entries: (ticket, bytes to send or None to drop, the packet as received)."""
        parts = []
        counters = self.counters
        for ticket, raw, packet in entries:
            mark, original = packet[3], packet[7]
            if raw is None:
                parts.append(netlink.verdict(self.queue, ticket, netlink.NF_DROP))
                counters["dropped"] += 1
                continue
            payload = None if raw == original else bytes(raw)
            parts.append(netlink.verdict(self.queue, ticket, netlink.NF_REPEAT, payload,
                                         mark=self._released_mark(mark)))
            counters["sent"] += 1
            if payload is not None:
                counters["modified"] += 1
        return parts

    def inject(self, raw: bytes, address: Address) -> None:
        if not self._send_open:
            raise OSError(errno.ESHUTDOWN, "sending was shut down on this handle")
        try:
            self.injector.send(raw, address.if_idx, address.outbound)
        except PermissionError as exc:
            raise PrerequisiteError(privileges.privilege_sentence(["CAP_NET_RAW"]), "privilege") from exc
        self.counters["injected"] += 1

    # -- parameters, shutdown, close, counters ------------------------------

    def set_param(self, param: Param, value: int) -> None:
        self.params[param] = value
        if param == Param.QUEUE_LENGTH and self.sock is not None and self.action == "divert":
            with self._lock:
                self._configure_queue(self.queue)

    def shutdown(self, how: str) -> None:
        if how in ("recv", "both"):
            self._recv_open = False
            if self.rules is not None:
                if self.flags & Flag.FAIL_OPEN or self.action == "drop":
                    # The counters go with the rules.
                    self._rule_hits = netfilter_rules.target_hits(self.rules)
                netfilter_rules.remove(self.rules)
                self.rules = None
        if how in ("send", "both"):
            self._send_open = False

    def close(self) -> None:
        self._closed.set()
        if self.sock is not None:
            # Kept for stats() after the close.
            self.counters["enobufs"] = self.sock.enobufs
            self.counters["verdict_errors"] = self.sock.verdict_errors
        self._final_kernel_counts = self._kernel_counts()
        if self.rules is not None:
            try:
                netfilter_rules.remove(self.rules)
            finally:
                self.rules = None
        with self._lock:
            if self.sock is not None:
                # Unbinding makes the kernel drop what is still queued for us;
                # rules are already gone, so nothing new arrives.
                held = len(self._pending) + sum(1 for p, _ in self._ready if p.packet_id)
                self.counters["dropped"] += held
                self._pending.clear()
                self._ready.clear()
                self._ready_bytes = 0
                try:
                    if self.action == "sniff":
                        self.sock.request(lambda seq: netlink.log_config_cmd(
                            self.queue, netlink.NFULNL_CFG_CMD_UNBIND, seq=seq))
                    elif self.action == "divert":
                        self.sock.request(lambda seq: netlink.queue_config_cmd(
                            self.queue, netlink.NFQNL_CFG_CMD_UNBIND, seq=seq))
                except OSError:
                    pass
                self.sock.close()
                self.sock = None
                self._ready_signal.close()
                self._ready_signal = None
        if self.assigned_queue is None and not self.flags & Flag.SEND_ONLY:
            # Our queue is unbound, so nothing of ours is held: the tables go if no handle is left.
            with contextlib.suppress(NetfilterError):
                netfilter_rules.remove_unused_tables()
        if self.injector is not None:
            self.injector.close()
        if self._proc_queues is not None:
            self._proc_queues.close()
        if self._sifter is not None and self._sifter is not threading.current_thread():
            self._sifter.join(timeout=2)

    def stats(self) -> dict[str, int]:
        counts = dict(self.counters)
        for key in ("diverted", "sniffed", "dropped", "expired", "overflowed", "bypassed", "rejected",
                    "sent", "modified", "injected", "lost_messages", "sniff_lost"):
            counts.setdefault(key, 0)
        if self.sock is not None:
            counts.update(enobufs=self.sock.enobufs, verdict_errors=self.sock.verdict_errors)
        counts.update(self._kernel_counts())
        return counts

    def _kernel_counts(self) -> dict[str, int]:
        """Overflow and fail-open bypass as the kernel counted them.

        Every packet that reaches the NFQUEUE rule is queued (and given the
        next id), or dropped because the queue is full (queue_dropped), or,
        in fail-open mode, let through without an id. So bypassed =
        rule hits - last id - queue_dropped, plus the id gaps of fail-open.
        """
        if self.action == "drop":
            # Dropped by the kernel's rule: nothing was received, so nothing else counts them.
            return {"dropped": self.counters["dropped"] + self._read_rule_hits()}
        if self.action != "divert" or self.sock is None:
            return self._final_kernel_counts
        row = None
        try:
            self._proc_queues.seek(0)
            for line in self._proc_queues.read().splitlines():
                fields = line.split()
                if fields and int(fields[0]) == self.queue:
                    row = [int(x) for x in fields[:8]]
        except (AttributeError, OSError, ValueError):
            return {}
        if row is None:
            return {}
        _number, _portid, queue_total, _mode, _range, queue_dropped, user_dropped, last_id = row
        counts = {"in_kernel_queue": queue_total,
                  "overflowed": queue_dropped + user_dropped + self.counters["overflowed"]}
        if self.flags & Flag.FAIL_OPEN:
            # Only fail-open passes packets while we are bound (queue bypass
            # needs an absent reader).
            counts["bypassed"] = self.counters["bypassed"] + max(0, self._read_rule_hits() - last_id - queue_dropped)
        return counts

    def _read_rule_hits(self) -> int:
        """The rule counters (target_hits): a netlink dump each, hence read at most every
        RULE_HITS_PERIOD seconds, and once more when the handle closes; the last reading
        stands once the rules are gone or cannot be read."""
        now = time.monotonic()
        if self.rules is not None and (self._closed.is_set() or now - self._rule_hits_at >= RULE_HITS_PERIOD):
            self._rule_hits_at = now
            with contextlib.suppress(NetfilterError):
                self._rule_hits = netfilter_rules.target_hits(self.rules)
        return self._rule_hits
