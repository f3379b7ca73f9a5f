"""pydivert's Divert handle over the engine's (divertgui.engine.handle.Divert).

The engine handle is made at open(); errors come out as pydivert raises
them: OSError with WinDivert's errno (EINVAL for a bad filter, flag,
priority or parameter, EPERM without privilege, EBADF for a closed handle),
RuntimeError for a handle that is not open, TimeoutError from recv.
"""

from __future__ import annotations

import collections
import errno
import socket
import sys
import warnings

from divertgui.engine.errors import (DivertArgumentError, DivertError, HandleClosedError, KernelFeatureError,
                                     UnsupportedPlatformError)
from divertgui.engine.filter import FilterError, compile_filter
from divertgui.engine.handle import MAX_BATCH
from divertgui.engine.handle import Divert as EngineDivert
from divertgui.engine.address import Flag as EngineFlag
from divertgui.engine.address import Param as EngineParam
from divertgui.pydivert.consts import DEFAULT_PACKET_BUFFER_SIZE, Flag, Layer, Param
from divertgui.pydivert.packet import Packet

# WinDivertShutdown's `how` values.
SHUTDOWN_RECV, SHUTDOWN_SEND, SHUTDOWN_BOTH = 1, 2, 3
_SHUTDOWN = {SHUTDOWN_RECV: "recv", SHUTDOWN_SEND: "send", SHUTDOWN_BOTH: "both"}


def _os_error(exc: Exception) -> Exception:
    """An engine error as the exception pydivert raises for it."""
    if isinstance(exc, FilterError):
        return OSError(errno.EINVAL, f"Invalid filter at position {exc.position}: {exc.message}")
    if isinstance(exc, (UnsupportedPlatformError, KernelFeatureError)):
        # pydivert's word for what this system cannot do (its EOPNOTSUPP).
        return NotImplementedError(str(exc))
    if isinstance(exc, PermissionError):
        return OSError(errno.EPERM, str(exc))
    if isinstance(exc, DivertArgumentError):
        return OSError(errno.EINVAL, str(exc))
    if isinstance(exc, HandleClosedError):
        return OSError(errno.EBADF, str(exc))
    return OSError(errno.EIO, str(exc))


class FilterString(str):
    """A handle's filter text; called, it yields the handle's packets that have the given fields."""

    _handle: "Divert"

    def __call__(self, *, proto=None, src_addr=None, dst_addr=None, src_port=None, dst_port=None,
                 direction=None):
        wanted = {"src_addr": src_addr, "dst_addr": dst_addr, "src_port": src_port, "dst_port": dst_port}
        for packet in self._handle:
            if proto and packet.protocol[0] != proto:
                continue
            if any(value and getattr(packet, name) != value for name, value in wanted.items()):
                continue
            if direction and packet.direction.name.lower() != direction.lower():
                continue
            yield packet


class Divert:
    """Divert(filter="true", layer=Layer.NETWORK, priority=0, flags=Flag.DEFAULT): a WinDivert handle."""

    def __init__(self, filter: str = "true", layer: Layer = Layer.NETWORK, priority: int = 0,
                 flags: Flag = Flag.DEFAULT, *, interfaces: list[str] | None = None, ring_bytes: int = 0) -> None:
        self.filter = filter
        self.layer, self.priority, self.flags = layer, priority, flags
        # pydivert's Linux options: the interfaces to divert on (all when None),
        # and its ring buffer's size, which has no counterpart here (QUEUE_SIZE sizes the queue).
        self._interfaces = list(interfaces) if interfaces else None
        self._handle: EngineDivert | None = None
        # Packets received before an error ended a receive: the next receive returns them.
        self._late: collections.deque = collections.deque()

    @property
    def filter(self) -> FilterString:
        """The filter text (used at the next open()); `handle.filter(dst_port=80, ...)` filters what is received."""
        text = FilterString(self._filter)
        text._handle = self
        return text

    @filter.setter
    def filter(self, text: str) -> None:
        self._filter = text.strip() if isinstance(text, str) else text

    # -- installation: nothing to install on Linux --------------------------------------

    @staticmethod
    def register() -> None:
        """Nothing to install: the engine sets up netfilter per handle."""

    @staticmethod
    def is_registered() -> bool:
        return True

    @staticmethod
    def unregister() -> None:
        """Remove what handles of processes that died left in netfilter (`divert cleanup`)."""
        if sys.platform.startswith("linux"):
            from divertgui.engine.backends import netfilter_rules
            netfilter_rules.cleanup(dead_only=True)

    @staticmethod
    def check_filter(filter: str, layer: Layer = Layer.NETWORK) -> tuple[bool, int, str]:
        """WinDivertHelperCompileFilter: (True, 0, "") or (False, error position, message)."""
        try:
            compile_filter(filter, layer)
        except FilterError as exc:
            return False, exc.position, exc.message
        return True, 0, ""

    # -- life cycle ------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._handle is not None and self._handle.is_open

    def open(self) -> "Divert":
        if self.is_open:
            raise RuntimeError("Divert handle is already open.")
        try:
            handle = EngineDivert(self._filter_on_interfaces(), Layer(self.layer), int(self.priority),
                                  EngineFlag(int(self.flags)))
            handle.open()
        except (DivertError, FilterError) as exc:
            raise _os_error(exc) from exc
        self._handle = handle
        return self

    def _filter_on_interfaces(self) -> str:
        """The filter, limited to the `interfaces` given, as an ifIdx test."""
        if not self._interfaces:
            return self._filter
        if Layer(self.layer) not in (Layer.NETWORK, Layer.NETWORK_FORWARD):
            raise OSError(errno.EINVAL, "interfaces= applies to the NETWORK and NETWORK_FORWARD layers only")
        # Compiled alone first, so that an error's position is in the caller's text.
        compile_filter(self._filter, self.layer)
        indexes = " or ".join(f"ifIdx == {socket.if_nametoindex(name)}" for name in self._interfaces)
        return f"({self._filter}) and ({indexes})"

    def close(self) -> None:
        if not self.is_open:
            raise RuntimeError("Divert handle is not open")
        self._late.clear()
        self._handle.close()

    def shutdown(self, how: int = SHUTDOWN_BOTH) -> None:
        """WinDivertShutdown: stop receiving (SHUTDOWN_RECV), sending (SHUTDOWN_SEND) or both."""
        if how not in _SHUTDOWN:
            raise OSError(errno.EINVAL, f"shutdown how={how!r}: use SHUTDOWN_RECV, SHUTDOWN_SEND or SHUTDOWN_BOTH")
        self._engine().shutdown(_SHUTDOWN[how])

    def __enter__(self) -> "Divert":
        return self.open()

    def __exit__(self, *exc_info) -> None:
        if self.is_open:
            self.close()

    async def __aenter__(self) -> "Divert":
        return self.open()

    async def __aexit__(self, *exc_info) -> None:
        if self.is_open:
            self.close()

    def __del__(self) -> None:
        if getattr(self, "_handle", None) is not None and self._handle.is_open:
            warnings.warn(f"Unclosed {type(self).__name__} handle: use it in a with block or call close()",
                          ResourceWarning, stacklevel=1)
            try:
                self._handle.close()
            except (DivertError, OSError):
                # Late in interpreter shutdown the rules may already be gone; nothing is left to close.
                pass

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return (f'<{type(self).__name__} state="{state}" filter={self._filter!r} '
                f'layer="{self.layer}" priority="{self.priority}" flags="{self.flags}" />')

    def _engine(self) -> EngineDivert:
        if not self.is_open:
            raise RuntimeError("Divert handle is not open")
        return self._handle

    # -- receiving -------------------------------------------------------------------

    def _receiving(self) -> EngineDivert:
        handle = self._engine()
        if Flag.SEND_ONLY in Flag(self.flags):
            raise OSError(errno.EBADF, "Handle is send-only")
        return handle

    def _engine_batch(self, count: int, timeout: float | None) -> list:
        """Up to `count` engine packets, waiting at most `timeout` for the first; [] when none came."""
        handle = self._receiving()
        batch = []
        while self._late and len(batch) < count:
            batch.append(self._late.popleft())
        try:
            while len(batch) < count:
                more = handle.recv_batch(min(MAX_BATCH, count - len(batch)), 0 if batch else timeout)
                if not more:
                    break
                batch += more
        except DivertError as exc:
            if batch:
                self._late.extendleft(reversed(batch))
            raise _os_error(exc) from exc
        return batch

    def recv(self, bufsize: int = DEFAULT_PACKET_BUFFER_SIZE, timeout: float | None = None) -> Packet:
        """The next packet; TimeoutError when `timeout` seconds pass first. Packets are never cut to `bufsize`."""
        batch = self._engine_batch(1, timeout)
        if not batch:
            raise TimeoutError("The read operation timed out")
        return Packet._of(batch[0])

    def recv_batch(self, count: int = 1, bufsize: int = DEFAULT_PACKET_BUFFER_SIZE,
                   timeout: float | None = None) -> list[Packet]:
        """Up to `count` packets: waits for the first, then takes what is already queued."""
        batch = self._engine_batch(count, timeout)
        if not batch:
            raise TimeoutError("The read operation timed out")
        return [Packet._of(packet) for packet in batch]

    def __iter__(self):
        while True:
            try:
                yield self.recv()
            except (EOFError, StopIteration, KeyboardInterrupt):
                break

    async def _engine_batch_async(self, count: int, timeout: float | None) -> list:
        """_engine_batch in an event loop: the engine waits on the handle's descriptor
        with loop.add_reader, and takes packets only once they can be returned."""
        handle = self._receiving()
        if self._late:
            return self._engine_batch(count, 0)
        try:
            batch = await handle.recv_batch_async(min(MAX_BATCH, count), timeout)
        except DivertError as exc:
            raise _os_error(exc) from exc
        if not batch:
            if not handle.is_open:
                raise OSError(errno.EBADF, "Handle closed while receiving")
            raise TimeoutError("The read operation timed out")
        if len(batch) < count:
            batch += self._engine_batch(count - len(batch), 0)
        return batch

    async def recv_async(self, bufsize: int = DEFAULT_PACKET_BUFFER_SIZE, timeout: float | None = None) -> Packet:
        return Packet._of((await self._engine_batch_async(1, timeout))[0])

    async def recv_batch_async(self, count: int = 1, bufsize: int = DEFAULT_PACKET_BUFFER_SIZE,
                               timeout: float | None = None) -> list[Packet]:
        return [Packet._of(packet) for packet in await self._engine_batch_async(count, timeout)]

    def __aiter__(self) -> "Divert":
        return self

    async def __anext__(self) -> Packet:
        try:
            return await self.recv_async()
        except (EOFError, StopIteration, KeyboardInterrupt):
            raise StopAsyncIteration from None

    # -- sending ---------------------------------------------------------------------

    def _sending(self) -> EngineDivert:
        handle = self._engine()
        if Flag.RECV_ONLY in Flag(self.flags):
            raise OSError(errno.EACCES, "Handle is recv-only")
        return handle

    def send(self, packet: Packet, recalculate_checksum: bool = True) -> int:
        """Re-inject a received packet or inject a new one; the number of bytes sent."""
        handle = self._sending()
        if recalculate_checksum:
            packet.recalculate_checksums()
        try:
            handle.send(packet._packet)
        except DivertError as exc:
            raise _os_error(exc) from exc
        return len(packet._packet)

    def send_batch(self, packets: list[Packet], recalculate_checksum: bool = True) -> int:
        """Send each packet; how many were sent (a packet that fails is skipped, as in pydivert)."""
        handle = self._sending()
        sent = 0
        # One at a time: a batch that fails part way would not say which packets went.
        for packet in packets:
            if recalculate_checksum:
                packet.recalculate_checksums()
            try:
                handle.send(packet._packet)
                sent += 1
            except (DivertError, OSError):
                continue
        return sent

    async def send_async(self, packet: Packet, recalculate_checksum: bool = True) -> int:
        # A send never waits for long (a verdict or a raw socket write): no thread needed.
        return self.send(packet, recalculate_checksum)

    async def send_batch_async(self, packets: list[Packet], recalculate_checksum: bool = True) -> int:
        return self.send_batch(packets, recalculate_checksum)

    # -- parameters and counters -------------------------------------------------------

    def get_param(self, name: Param) -> int:
        return self._engine().get_param(EngineParam(int(name)))

    def set_param(self, name: Param, value: int) -> int:
        try:
            self._engine().set_param(EngineParam(int(name)), value)
        except DivertArgumentError as exc:
            raise _os_error(exc) from exc
        return 1

    def stats(self) -> dict[str, int]:
        """The engine's counters, and the queue parameters as pydivert names them."""
        counts = self._engine().stats()
        counts.update(queue_len=self.get_param(Param.QUEUE_LEN), queue_time=self.get_param(Param.QUEUE_TIME),
                      queue_size=self.get_param(Param.QUEUE_SIZE))
        return counts
