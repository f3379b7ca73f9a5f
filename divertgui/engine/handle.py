"""Divert: a WinDivert handle, backend-neutral.

Verdicts. A diverted packet is out of the stack until this handle sends it
(send/send_batch: released with its current bytes) or it is dropped. It is
dropped when the Packet object is garbage-collected without having been
sent, and at close() for whatever is still pending, so a program drops a
packet simply by not sending it and nothing stays stuck in the kernel queue.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import weakref

from divertgui.engine.address import PARAM_LIMITS, PRIORITY_MAX, PRIORITY_MIN, Flag, Layer, Param
from divertgui.engine.backends.select import default_backend
from divertgui.engine.checksum import ChecksumFlag, calc_checksums, decrement_ttl
from divertgui.engine.errors import (BackendError, DivertArgumentError, DivertError, HandleClosedError,
                                     HostUnreachableError, KernelFeatureError, MissingToolError, NotPrivilegedError,
                                     PacketTooLargeError, UnsupportedPlatformError)
from divertgui.engine.filter import compile_filter
from divertgui.engine.header_fields import IPV4, IPV6, IPV6_HEADER_LEN, ip_version
from divertgui.engine.packet import Packet
from divertgui.engine.readable import ReadableWaiters

VERSION_MAJOR, VERSION_MINOR = 2, 2
MAX_BATCH = 255
TICKET_SHIFT = 32
TICKET_MASK = (1 << TICKET_SHIFT) - 1
_serials = itertools.count(1)
KNOWN_FLAGS = sum(int(flag) for flag in Flag)


# Flags WinDivertOpen requires at the event layers (doc/windivert.html, section 5.1).
REQUIRED_FLAGS = {
    Layer.FLOW: Flag.SNIFF | Flag.RECV_ONLY,
    Layer.SOCKET: Flag.RECV_ONLY,
    Layer.REFLECT: Flag.SNIFF | Flag.RECV_ONLY,
}


# IPv4's total length and IPv6's payload length are 16-bit fields; IPv6
# jumbograms (RFC 2675) are not sent.
IPV4_MAX_SIZE = IPV4["length"].mask
IPV6_MAX_SIZE = IPV6_HEADER_LEN + IPV6["length"].mask


# serial -> open handle, so that a received packet finds its handle from its ticket alone.
_open_handles: "weakref.WeakValueDictionary[int, Divert]" = weakref.WeakValueDictionary()


class _HeldPacket(Packet):
    """A received packet whose pending verdict is dropped when it is garbage-collected unsent.

    A finaliser on the packet costs one call when it goes away; a weak
    reference with a callback per packet cost several times more.
    """

    __slots__ = ()

    def __del__(self):
        # Sending or dropping the packet sets its ticket to 0.
        ticket = self.ticket
        if ticket:
            handle = _open_handles.get(ticket >> TICKET_SHIFT)
            if handle is not None:
                handle._collected(ticket & TICKET_MASK)


def _outgoing_bytes(packet: Packet) -> bytes:
    """The bytes WinDivertSend would send for this packet and its address.

    "Injected packets must have the correct checksums or have the
    corresponding *Checksum flag unset": an unset flag has that checksum
    computed (ICMP and ICMPv6 checksums are assumed valid, as the driver
    assumes them). "For impostor packets ... WinDivert will automatically
    decrement the ip.TTL or ipv6.HopLimit fields before reinjection", and
    refuses the packet with ERROR_HOST_UNREACHABLE when that reaches zero.
    """
    raw, address = packet.raw, packet.address
    _check_ip_size(raw)
    skip = (_ALWAYS_VALID | (_NO_IP if address.ip_checksum else 0) | (_NO_TCP if address.tcp_checksum else 0)
            | (_NO_UDP if address.udp_checksum else 0))
    if skip == _ALL_VALID and not address.impostor:
        return raw
    edited = bytearray(raw)
    if skip != _ALL_VALID:
        calc_checksums(edited, None, skip)
    if address.impostor and not decrement_ttl(edited):
        hops = "hop limit" if ip_version(edited) == 6 else "TTL"
        raise HostUnreachableError(f"an impostor packet's {hops} reached zero: not sent "
                                   f"(WinDivert: ERROR_HOST_UNREACHABLE)")
    return bytes(edited)


def _check_ip_size(raw: bytes) -> None:
    if len(raw) > IPV4_MAX_SIZE:
        if ip_version(raw) == 6:
            if len(raw) > IPV6_MAX_SIZE:
                raise PacketTooLargeError(len(raw), IPV6_MAX_SIZE, "an IPv6 packet without jumbogram support")
        else:
            raise PacketTooLargeError(len(raw), IPV4_MAX_SIZE, "an IPv4 packet (16-bit total length)")


# Plain ints: this runs for every packet sent.
_ALWAYS_VALID = int(ChecksumFlag.NO_ICMP_CHECKSUM | ChecksumFlag.NO_ICMPV6_CHECKSUM)
_NO_IP, _NO_TCP, _NO_UDP = (int(ChecksumFlag.NO_IP_CHECKSUM), int(ChecksumFlag.NO_TCP_CHECKSUM),
                            int(ChecksumFlag.NO_UDP_CHECKSUM))
# The same for the handle flags tested on every recv and send (an IntFlag operation costs microseconds).
_SEND_ONLY, _RECV_ONLY, _DROP = int(Flag.SEND_ONLY), int(Flag.RECV_ONLY), int(Flag.DROP)
_NOT_PASSED = int(Flag.SNIFF | Flag.SEND_ONLY | Flag.RECV_ONLY | Flag.DROP)
_ALL_VALID = _ALWAYS_VALID | _NO_IP | _NO_TCP | _NO_UDP


def _check_batch_size(n: int) -> None:
    if not 1 <= n <= MAX_BATCH:
        raise DivertArgumentError(f"batch size {n} is outside 1..{MAX_BATCH}")


def _translate(exc: Exception) -> DivertError:
    """One clear sentence from a backend failure, as the right DivertError.

    A backend names what is missing in a BackendError's `kind`.
    """
    kinds = {"privilege": NotPrivilegedError, "tool": MissingToolError,
             "kernel": KernelFeatureError, "platform": UnsupportedPlatformError}
    kind = exc.kind if isinstance(exc, BackendError) else None
    if kind in kinds:
        return kinds[kind](str(exc))
    if isinstance(exc, PermissionError):
        from divertgui.engine.privileges import privilege_sentence
        return NotPrivilegedError(f"{privilege_sentence()} ({exc})")
    return DivertError(str(exc))


class Divert:
    """Divert(filter="true", layer=Layer.NETWORK, priority=0, flags=Flag(0), backend=None)."""

    def __init__(self, filter: str = "true", layer: Layer = Layer.NETWORK, priority: int = 0,
                 flags: Flag = Flag(0), backend=None):
        layer = Layer(layer)
        flags = Flag(flags)
        unknown = int(flags) & ~KNOWN_FLAGS
        if unknown:
            # WinDivertOpen: ERROR_INVALID_PARAMETER for "an invalid ... flags".
            raise DivertArgumentError(f"flags 0x{int(flags):x} include unknown bits 0x{unknown:x}; "
                                      f"known flags: {', '.join(f.name for f in Flag)}")
        required = REQUIRED_FLAGS.get(layer, Flag(0))
        if flags & required != required:
            raise DivertArgumentError(f"a {layer.name}-layer handle needs the flags {required!r} "
                                      f"(its events can only be received, as in WinDivert)")
        if flags & Flag.SNIFF and flags & Flag.DROP:
            raise DivertArgumentError("flags SNIFF and DROP cannot be combined")
        if flags & Flag.RECV_ONLY and flags & Flag.SEND_ONLY:
            raise DivertArgumentError("flags RECV_ONLY and SEND_ONLY cannot be combined")
        if not isinstance(priority, int) or not PRIORITY_MIN <= priority <= PRIORITY_MAX:
            raise DivertArgumentError(f"priority {priority!r} is outside {PRIORITY_MIN}..{PRIORITY_MAX}")
        self.filter_text = filter
        self.filter = compile_filter(filter, layer)
        self.layer, self.priority, self.flags = layer, priority, flags
        self._flag_bits = int(flags)
        self.params = {param: limits[0] for param, limits in PARAM_LIMITS.items()}
        self._backend = backend
        self._serial = next(_serials)
        self._opened = False
        self._closed = False
        self._recv_shut = self._send_shut = False
        # Backend tickets of the received packets whose verdict is pending
        # here, each with the direction the packet was received in.
        self._held: dict[int, bool] = {}
        # Re-entrant: a garbage collection inside a locked block may finalise
        # an unsent packet, which drops it and takes the lock again.
        self._lock = threading.RLock()
        self._received = 0
        self._registry_name: str | None = None
        self.registry_error: str | None = None
        self._async_waiters = ReadableWaiters()

    # -- life cycle ------------------------------------------------------------

    def open(self) -> "Divert":
        if self._opened:
            raise DivertError("the handle is already open")
        if self._closed:
            raise HandleClosedError("a closed handle cannot be opened again; create a new Divert")
        backend = self._backend if self._backend is not None else default_backend(self.layer)
        try:
            backend.open(self.filter, self.layer, self.priority, self.flags, dict(self.params))
        except DivertError:
            raise
        except Exception as exc:
            raise _translate(exc) from exc
        self._backend = backend
        self._opened = True
        _open_handles[self._serial] = self
        self._announce()
        return self

    def _announce(self) -> None:
        """Enter the handle in the machine's registry, for REFLECT handles and `divert list`.

        Best effort: a process that may not write the registry still diverts;
        `registry_error` says why it is not listed.
        """
        self._registry_name = None
        self.registry_error = None
        if self.layer == Layer.REFLECT or not self._backend.registered:
            return
        from divertgui.engine.backends import handle_registry
        try:
            self._registry_name = handle_registry.register(self.layer, self.priority, int(self.flags),
                                                           self.filter_text, time.monotonic_ns())
        except OSError as exc:
            self.registry_error = str(exc)

    @property
    def is_open(self) -> bool:
        return self._opened and not self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        _open_handles.pop(self._serial, None)
        self._async_waiters.wake_all()
        with self._lock:
            self._held.clear()
        if self._opened:
            self._backend.close()
            if self._registry_name is not None:
                from divertgui.engine.backends import handle_registry
                handle_registry.unregister(self._registry_name)

    def shutdown(self, how: str = "both") -> None:
        """Stop receiving ("recv"), sending ("send") or both; queued packets stay readable."""
        if how not in ("recv", "send", "both"):
            raise DivertArgumentError(f"shutdown how={how!r}: use 'recv', 'send' or 'both'")
        self._require_open()
        if how in ("recv", "both"):
            self._recv_shut = True
            self._async_waiters.wake_all()
        if how in ("send", "both"):
            self._send_shut = True
        self._backend.shutdown(how)

    def __enter__(self) -> "Divert":
        if not self._opened:
            self.open()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __iter__(self):
        return self

    def __next__(self) -> Packet:
        while self.is_open:
            batch = self._recv(1, None)
            if batch:
                return batch[0]
            if self._recv_shut:
                break
        raise StopIteration

    def _require_open(self) -> None:
        if not self._opened:
            raise HandleClosedError("the handle is not open; call open() or use it in a with block")
        if self._closed:
            raise HandleClosedError("the handle is closed")

    # -- receiving ---------------------------------------------------------------

    def recv(self, timeout: float | None = None) -> Packet:
        """The next packet; TimeoutError when `timeout` seconds pass first."""
        return self._first(self.recv_batch(1, timeout), timeout)

    def _first(self, batch: list[Packet], timeout: float | None) -> Packet:
        if not batch:
            if self._closed:
                raise HandleClosedError("the handle was closed while waiting for a packet")
            if self._recv_shut:
                raise HandleClosedError("receiving was shut down and no queued packet is left")
            raise TimeoutError(f"no packet matching {self.filter_text!r} within {timeout} s")
        return batch[0]

    def recv_batch(self, n: int = MAX_BATCH, timeout: float | None = None) -> list[Packet]:
        """Up to n packets (1..255) in one call; [] when `timeout` passes first."""
        _check_batch_size(n)
        return self._recv(n, timeout)

    def fileno(self) -> int | None:
        """The descriptor that becomes readable when packets may be waiting (Backend.fileno);
        None for sources whose packets fall due on a clock (demo, replay)."""
        self._require_open()
        return self._backend.fileno()

    async def recv_async(self, timeout: float | None = None) -> Packet:
        """recv() in an event loop, which it never blocks."""
        return self._first(await self.recv_batch_async(1, timeout), timeout)

    async def recv_batch_async(self, n: int = MAX_BATCH, timeout: float | None = None) -> list[Packet]:
        """recv_batch() in an event loop: waits with loop.add_reader on fileno().

        Packets are taken only once they can be returned, so cancelling the
        wait loses none; [] when `timeout` passes first or the handle closes.
        """
        _check_batch_size(n)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            batch = self._recv(n, 0)
            if batch or self._recv_shut:
                return batch
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return []
            await self._async_waiters.wait(self.fileno(), remaining)
            if self._closed:
                return []

    def _recv(self, n: int, timeout: float | None) -> list[Packet]:
        self._require_open()
        if self._flag_bits & _SEND_ONLY:
            raise DivertError("this handle was opened SEND_ONLY: it cannot receive")
        if self._flag_bits & _DROP:
            raise DivertError("this handle was opened with DROP: matching packets are dropped in the "
                              "kernel and there is nothing to receive")
        packets, tickets = [], []
        prefix = self._serial << TICKET_SHIFT
        for raw, address, ticket in self._backend.recv_batch(n, timeout):
            if ticket:
                packets.append(_HeldPacket(raw, address, prefix | ticket))
                tickets.append((ticket, address.outbound))
            else:
                packets.append(Packet(raw, address))
        if tickets:
            with self._lock:
                self._held.update(tickets)
        self._received += len(packets)
        return packets

    def _collected(self, ticket: int) -> None:
        """A received packet was garbage-collected unsent: drop it, unless the handle already let it go."""
        try:
            with self._lock:
                if self._held.pop(ticket, None) is None:
                    return
            if not self._closed:
                self._backend.verdict(ticket, None)
        except (KeyError, OSError):
            # Already released by the backend (expired, closed): nothing is left to drop.
            pass

    # -- sending -----------------------------------------------------------------

    def _own_ticket(self, packet: Packet) -> int:
        ticket = packet.ticket
        if ticket >> TICKET_SHIFT == self._serial:
            return ticket & TICKET_MASK
        return 0

    def edited_size_limit(self, raw: bytes) -> int:
        """The most bytes a packet of `raw`'s IP version can have, sent in place of a received packet."""
        limit = IPV6_MAX_SIZE if ip_version(raw) == 6 else IPV4_MAX_SIZE
        backend = self._backend.max_edited_size if self._backend is not None else None
        return limit if backend is None else min(limit, backend)

    def check_size(self, raw: bytes) -> None:
        """Raise PacketTooLargeError when `raw`, sent in place of a received packet, could not be sent."""
        _check_ip_size(raw)
        limit = self._backend.max_edited_size
        if limit is not None and len(raw) > limit:
            raise PacketTooLargeError(len(raw), limit, self._backend.max_edited_size_reason)

    def send(self, packet: Packet) -> None:
        """Release a received packet with its current bytes, or inject a new one."""
        self.send_batch([packet])

    def send_batch(self, packets) -> None:
        self._require_open()
        if self._flag_bits & _RECV_ONLY:
            raise DivertError("this handle was opened RECV_ONLY: it cannot send")
        if self._send_shut:
            raise HandleClosedError("sending was shut down on this handle")
        verdicts, released, injected = [], [], []
        serial, held = self._serial, self._held
        # Every packet is checked before any is sent.
        outgoing = [(packet, _outgoing_bytes(packet)) for packet in packets]
        with self._lock:
            for packet, raw in outgoing:
                ticket = packet.ticket
                received_outbound = held.get(ticket & TICKET_MASK) if ticket >> TICKET_SHIFT == serial else None
                if received_outbound is None:
                    injected.append((packet, raw))
                elif received_outbound == packet.address.outbound:
                    verdicts.append((ticket & TICKET_MASK, raw))
                    released.append(packet)
                else:
                    # "Only the Outbound field ... determines the packet's
                    # direction": a packet turned around leaves the path it
                    # was held on and is injected into the other one.
                    verdicts.append((ticket & TICKET_MASK, None))
                    released.append(packet)
                    injected.append((packet, raw))
        if verdicts:
            # Tickets are let go only once the backend took the verdicts.
            self._backend.verdict_many(verdicts)
            with self._lock:
                for ticket, _raw in verdicts:
                    held.pop(ticket, None)
                for packet in released:
                    packet.ticket = 0
        for packet, raw in injected:
            self._backend.inject(raw, packet.address.copy(impostor=False) if packet.address.impostor
                                 else packet.address)

    def pass_batch(self, n: int = MAX_BATCH, timeout: float | None = None) -> int:
        """send_batch(recv_batch(n, timeout)) without building the packets; how many passed.

        For programs that re-inject what they divert unchanged and only count
        it (WinDivert's passthru): the backend reads each packet's id and
        mark and releases the lot, in one verdict where it can.
        """
        _check_batch_size(n)
        self._require_open()
        if not self._backend.passes_batches or self._flag_bits & _NOT_PASSED:
            # Exactly send_batch(recv_batch()): sniffed copies get injected, the
            # other flags raise their own errors.
            batch = self._recv(n, timeout)
            if batch:
                self.send_batch(batch)
            return len(batch)
        if self._send_shut:
            raise HandleClosedError("sending was shut down on this handle")
        count = self._backend.pass_batch(n, timeout)
        self._received += count
        return count

    def drop(self, packet: Packet) -> None:
        """Drop a received packet now rather than when it is garbage-collected."""
        self._require_open()
        ticket = self._own_ticket(packet)
        if not ticket or ticket not in self._held:
            raise DivertError("this packet has no pending verdict on this handle")
        self._backend.verdict(ticket, None)
        with self._lock:
            self._held.pop(ticket, None)
        packet.ticket = 0

    # -- parameters and counters ---------------------------------------------------

    def set_param(self, param: Param, value: int) -> None:
        param = Param(param)
        if param not in PARAM_LIMITS:
            raise DivertArgumentError(f"parameter {param.name} is read-only")
        _default, low, high = PARAM_LIMITS[param]
        if not isinstance(value, int) or not low <= value <= high:
            raise DivertArgumentError(f"{param.name} = {value!r} is outside {low}..{high}")
        self.params[param] = value
        if self.is_open:
            self._backend.set_param(param, value)

    def get_param(self, param: Param) -> int:
        param = Param(param)
        if param == Param.VERSION_MAJOR:
            return VERSION_MAJOR
        if param == Param.VERSION_MINOR:
            return VERSION_MINOR
        return self.params[param]

    def stats(self) -> dict[str, int]:
        """diverted, sniffed, dropped, expired, overflowed, bypassed, and more from the backend."""
        counts = {"diverted": 0, "sniffed": 0, "dropped": 0, "expired": 0, "overflowed": 0, "bypassed": 0}
        if self._opened:
            counts.update(self._backend.stats())
        counts["received"] = self._received
        counts["held"] = len(self._held)
        return counts

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed" if self._closed else "new"
        return (f"Divert({self.filter_text!r}, layer={self.layer.name}, priority={self.priority}, "
                f"flags={self.flags!r}) [{state}]")
