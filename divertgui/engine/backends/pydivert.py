"""WinDivert through pydivert: the WinDivert driver on Windows, pydivert's
eBPF library (libebpfdivert, TC hooks) on Linux.

Both speak WinDivert's API, filter language and WINDIVERT_ADDRESS, so this
backend only translates: pydivert packets become Captured, a verdict sends
the held packet back with the address it was received with, a drop is a
packet never sent back. The filter given to the driver is the handle's own
filter text; the driver compiles and evaluates it, nothing is re-tested here.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import itertools
import os
import sys
import threading

from divertgui.engine.address import Address, Event, Flag, Layer, Param, PARAM_LIMITS
from divertgui.engine.header_fields import ip_version
from divertgui.engine.backends.base import Backend, Captured
from divertgui.engine.errors import (DivertError, KernelFeatureError, MissingToolError, NotPrivilegedError,
                                     UnsupportedPlatformError)

# The flags WinDivert itself knows; the rest (FAIL_OPEN) are netfilter notions.
WINDIVERT_FLAGS = Flag.SNIFF | Flag.DROP | Flag.RECV_ONLY | Flag.SEND_ONLY | Flag.NO_INSTALL | Flag.FRAGMENTS
# pydivert's Param numbers are WinDivert's, the same as ours.
DRIVER_PARAMS = (Param.QUEUE_LENGTH, Param.QUEUE_TIME, Param.QUEUE_SIZE)
PACKET_BUFFER_SIZE = 0xFFFF + 40
IS_WINDOWS = sys.platform == "win32"


def _import_pydivert():
    try:
        import pydivert
    except ImportError as exc:
        raise MissingToolError(f"the pydivert backend needs the pydivert package (pip install 'pydivert>=4'): {exc}") from exc
    if not (IS_WINDOWS or sys.platform.startswith("linux")):
        raise UnsupportedPlatformError(f"pydivert diverts on Windows and Linux only, not on {sys.platform}")
    if not IS_WINDOWS:
        from pydivert import bpf
        if bpf.libebpfdivert is None:
            raise MissingToolError("pydivert's Linux library libebpfdivert.so did not load: reinstall pydivert "
                                   "from its manylinux wheel, or set PYDIVERT_EBPFDIVERT_LIB to the library")
    return pydivert


def _ticks_to_ns():
    """How the driver's timestamps become time.monotonic_ns() units.

    libebpfdivert stamps packets with the kernel's monotonic clock in ns;
    WinDivert with QueryPerformanceCounter ticks, which are what Python's
    monotonic clock counts on Windows, so only the unit changes.
    """
    if not IS_WINDOWS:
        return lambda ticks: ticks
    import ctypes
    frequency = ctypes.c_int64()
    ctypes.windll.kernel32.QueryPerformanceFrequency(ctypes.byref(frequency))
    per_second = frequency.value or 1
    return lambda ticks: ticks * 1_000_000_000 // per_second


def address_from_windivert(wd, sniffed: bool, to_ns) -> Address:
    return Address(
        outbound=bool(wd.Outbound), loopback=bool(wd.Loopback), impostor=bool(wd.Impostor),
        ipv6=bool(wd.IPv6), if_idx=wd.u.Network.IfIdx, sub_if_idx=wd.u.Network.SubIfIdx,
        timestamp=to_ns(wd.Timestamp), sniffed=bool(wd.Sniffed) or sniffed,
        layer=Layer(wd.Layer) if wd.Layer in Layer._value2member_map_ else Layer.NETWORK,
        event=Event(wd.Event) if wd.Event in Event._value2member_map_ else Event.PACKET,
        ip_checksum=bool(wd.IPChecksum), tcp_checksum=bool(wd.TCPChecksum), udp_checksum=bool(wd.UDPChecksum))


def windivert_from_address(address: Address, raw: bytes):
    from pydivert.windivert_dll.structs import WinDivertAddress
    wd = WinDivertAddress()
    wd.Layer, wd.Event = int(address.layer), int(address.event)
    wd.Outbound, wd.Loopback, wd.Impostor = address.outbound, address.loopback, address.impostor
    # The bytes decide the version: an address copied from another packet may say otherwise.
    wd.IPv6 = ip_version(raw) == 6
    wd.IPChecksum, wd.TCPChecksum, wd.UDPChecksum = address.ip_checksum, address.tcp_checksum, address.udp_checksum
    wd.u.Network.IfIdx, wd.u.Network.SubIfIdx = address.if_idx, address.sub_if_idx
    return wd


def _open_error(exc: BaseException, filter_text: str) -> DivertError:
    """The driver's failure to open, as one sentence naming what is missing."""
    code = getattr(exc, "winerror", None) or getattr(exc, "errno", None)
    where = "the WinDivert driver" if IS_WINDOWS else "pydivert's eBPF library"
    if isinstance(exc, NotImplementedError):
        return UnsupportedPlatformError(f"{where} cannot do this: {exc}")
    if IS_WINDOWS and code in (5, 1314):     # ERROR_ACCESS_DENIED, ERROR_PRIVILEGE_NOT_HELD
        return NotPrivilegedError("opening a WinDivert handle needs Administrator rights: "
                                  "run divert.exe or the capture from an elevated prompt")
    if not IS_WINDOWS and code in (errno.EPERM, errno.EACCES):
        return NotPrivilegedError("pydivert's eBPF backend needs CAP_BPF and CAP_NET_ADMIN "
                                  "(run as root, or give the program those capabilities with setcap)")
    if IS_WINDOWS and code == 2:
        return MissingToolError("WinDivert64.sys / WinDivert64.dll were not found next to pydivert: "
                                "reinstall pydivert's Windows wheel")
    if IS_WINDOWS and code == 577:
        return KernelFeatureError("Windows refused to load the WinDivert driver (signature check, code 577): "
                                  "Secure Boot or an antivirus may be blocking WinDivert64.sys")
    if code == errno.EINVAL and "filter" in str(exc).lower():
        return DivertError(f"{where} rejected the filter {filter_text!r}: {exc}")
    if not IS_WINDOWS and code in (errno.ENOENT, errno.EOPNOTSUPP, errno.ENOSYS, errno.ENODEV):
        return KernelFeatureError(f"{where} could not attach its programs ({os.strerror(code)}): the kernel "
                                  f"needs BPF (CONFIG_BPF_SYSCALL), tc clsact and BPF ring buffers (5.8 or later)")
    return DivertError(f"{where} could not open a handle for {filter_text!r}: {exc}")


class PydivertBackend(Backend):
    """Backend over pydivert.Divert; `interfaces` limits the eBPF hooks to these device names (Linux)."""

    name = "pydivert"

    def __init__(self, interfaces: list[str] | None = None):
        self.interfaces = interfaces
        self.divert = None
        self.counters = collections.Counter()
        self._driver_counts: dict[str, int] = {}   # the driver's, as last read; they go with its handle
        self._pending: dict[int, tuple] = {}        # ticket -> (WinDivertAddress it came with, original bytes)
        self._tickets = itertools.count(1)
        self._lock = threading.Lock()
        self._to_ns = _ticks_to_ns()
        self._sniffing = False

    def open(self, filter, layer: Layer, priority: int, flags: Flag, params: dict[Param, int]) -> None:
        pydivert = _import_pydivert()
        text = filter.text
        driver_flags = pydivert.Flag(int(flags & WINDIVERT_FLAGS))
        extra = {"interfaces": self.interfaces} if self.interfaces and not IS_WINDOWS else {}
        divert = pydivert.Divert(text, layer=pydivert.Layer(int(layer)), priority=priority, flags=driver_flags, **extra)
        try:
            divert.open()
        except (OSError, NotImplementedError, RuntimeError) as exc:
            raise _open_error(exc, text) from exc
        self.divert = divert
        self._sniffing = bool(flags & Flag.SNIFF)
        for param in DRIVER_PARAMS:
            value = params.get(param, PARAM_LIMITS[param][0])
            if value != PARAM_LIMITS[param][0]:
                self.set_param(param, value)

    def _require_open(self):
        if self.divert is None:
            raise DivertError("the pydivert handle is not open")
        return self.divert

    def recv_batch(self, max_count: int, timeout: float | None) -> list[Captured]:
        divert = self._require_open()
        try:
            packets = divert.recv_batch(max_count, PACKET_BUFFER_SIZE, timeout)
        except TimeoutError:
            return []
        except OSError as exc:
            if exc.errno == errno.EBADF or getattr(exc, "winerror", None) in (6, 232):
                return []           # shut down or closed while waiting
            raise DivertError(f"receiving from the pydivert handle failed: {exc}") from exc
        captured = []
        for packet in packets:
            wd = packet.wd_addr
            raw = bytes(packet.raw)
            address = address_from_windivert(wd, self._sniffing, self._to_ns)
            ticket = 0
            if not address.sniffed:
                ticket = next(self._tickets)
                with self._lock:
                    self._pending[ticket] = (wd, raw)
            captured.append(Captured(raw, address, ticket))
        self.counters["sniffed" if self._sniffing else "diverted"] += len(captured)
        return captured

    def verdict(self, ticket: int, raw: bytes | None) -> None:
        with self._lock:
            wd, original = self._pending.pop(ticket)
        if raw is None:
            self.counters["dropped"] += 1
            return
        # Divert.send has already taken an impostor's hop off: the driver must not again.
        wd.Impostor = 0
        self._send(raw, wd)
        self.counters["sent"] += 1
        if raw != original:
            self.counters["modified"] += 1

    def verdict_many(self, verdicts: list[tuple[int, bytes | None]]) -> None:
        for ticket, raw in verdicts:
            self.verdict(ticket, raw)

    def inject(self, raw: bytes, address: Address) -> None:
        self._send(raw, windivert_from_address(address, raw))
        self.counters["injected"] += 1

    def _send(self, raw: bytes, wd) -> None:
        from pydivert import Packet
        divert = self._require_open()
        try:
            # No checksum is recomputed: as with WinDivertSend, the bytes go as given.
            divert.send(Packet(bytearray(raw), wd_addr=wd), recalculate_checksum=False)
        except OSError as exc:
            raise DivertError(f"sending {len(raw)} bytes through the pydivert handle failed: {exc}") from exc

    def set_param(self, param: Param, value: int) -> None:
        divert = self._require_open()
        try:
            divert.set_param(int(param), value)
        except OSError as exc:
            raise DivertError(f"the driver refused {Param(param).name} = {value}: {exc}") from exc

    def shutdown(self, how: str) -> None:
        divert = self._require_open()
        code = {"recv": 1, "send": 2, "both": 3}[how]
        if IS_WINDOWS:
            # pydivert's WinDivert class has no shutdown(); its DLL binding does.
            from pydivert import windivert_dll
            windivert_dll.WinDivertShutdown(divert._handle, code)
            return
        divert.shutdown(code)

    def close(self) -> None:
        self._read_driver_counts()
        divert, self.divert = self.divert, None
        with self._lock:
            # Held packets that were never sent back are dropped with the handle.
            self.counters["dropped"] += len(self._pending)
            self._pending.clear()
        if divert is not None and divert.is_open:
            if not IS_WINDOWS:
                # Wakes a reader blocked in recv before the handle's memory goes.
                try:
                    divert.shutdown(3)
                except OSError:
                    pass
            divert.close()

    def _read_driver_counts(self) -> dict[str, int]:
        if self.divert is not None:
            with contextlib.suppress(OSError, RuntimeError):
                self._driver_counts = dict(self.divert.stats())
        return self._driver_counts

    def stats(self) -> dict[str, int]:
        counts = dict(self.counters)
        driver = self._read_driver_counts()
        if not driver:
            return counts
        # Kernel-side counts: DROP-flag drops, and copies lost because the ring or queue was full.
        counts["dropped"] = counts.get("dropped", 0) + driver.get("dropped", 0)
        counts["overflowed"] = driver.get("queue_full", 0) + driver.get("ringbuf_full", 0) + driver.get("too_big", 0)
        counts["unparsed"] = driver.get("parsing_errors", 0)
        counts["kernel_diverted"] = driver.get("diverted", 0)
        counts["kernel_sniffed"] = driver.get("sniffed", 0)
        return counts

    def fileno(self) -> int | None:
        return getattr(self.divert, "_event_fd", None) if self.divert is not None else None
