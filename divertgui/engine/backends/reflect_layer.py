"""The REFLECT layer: OPEN and CLOSE of every divert handle on the machine.

Handles announce themselves in the registry (handle_registry.py); this
backend watches its directory with inotify (an entry renamed into place is
an OPEN, an entry removed a CLOSE) and each entry's process with a pidfd
(a process that dies without closing its handle still gives a CLOSE). As in
WinDivert, the handles already open are reported as OPEN first, REFLECT
handles themselves are not reported, and each event's data is the
handle's filter as WinDivert's object text.
"""

from __future__ import annotations

import ctypes
import os
import select
import struct
import time
from collections import deque

from divertgui.engine.address import Address, Event, Layer, ReflectData
from divertgui.engine.errors import ReflectLayerError, RegistryError
from divertgui.engine.filter import FilterError, compile_filter
from divertgui.engine.filter.serialize import filter_object

from . import handle_registry as registry
from .base import Backend, Captured

IN_MOVED_TO, IN_DELETE, IN_NONBLOCK, IN_CLOEXEC = 0x80, 0x200, 0o4000, 0o2000000
_EVENT_HEADER = struct.Struct("iIII")
_libc = ctypes.CDLL(None, use_errno=True)


def filter_data(entry: registry.Entry) -> bytes:
    try:
        return filter_object(compile_filter(entry.filter, entry.layer).program).encode()
    except FilterError:
        return entry.filter.encode()


def event_address(entry: registry.Entry, event: Event) -> Address:
    return Address(layer=Layer.REFLECT, event=event, timestamp=time.monotonic_ns(), sniffed=True,
                   reflect=ReflectData(timestamp=entry.opened, process_id=entry.pid, layer=entry.layer,
                                       flags=entry.flags, priority=entry.priority))


class ReflectBackend(Backend):
    name = "reflect"

    def __init__(self):
        self._inotify = -1
        self._directory = -1
        self._watched: dict[str, tuple[registry.Entry, int]] = {}   # entry name -> (entry, pidfd)
        self._by_pidfd: dict[int, str] = {}
        self._queue: deque[Captured] = deque()
        self._filter = None
        # One epoll for the directory and every pidfd: its descriptor is fileno().
        self._poll = select.epoll()

    def open(self, filter, layer, priority, flags, params) -> None:
        if layer != Layer.REFLECT:
            raise ReflectLayerError(f"the registry backend serves the REFLECT layer, not {layer.name}")
        self._filter = filter
        try:
            self._directory = registry.open_directory(create=True)
        except RegistryError as exc:
            raise ReflectLayerError(str(exc), kind="privilege") from None
        self._inotify = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self._inotify < 0 or _libc.inotify_add_watch(self._inotify, registry.DIRECTORY.encode(),
                                                         IN_MOVED_TO | IN_DELETE) < 0:
            errno_ = ctypes.get_errno()
            self.close()
            raise ReflectLayerError(f"cannot watch {registry.DIRECTORY}: {os.strerror(errno_)}", kind="kernel")
        self._poll.register(self._inotify, select.EPOLLIN)
        for name in sorted(os.listdir(self._directory)):
            self._appeared(name)

    def _appeared(self, name: str) -> None:
        entry = registry.read_entry(self._directory, name)
        if entry is None or name in self._watched:
            return
        try:
            pidfd = os.pidfd_open(entry.pid)
        except OSError:
            return
        if not registry.alive(entry):      # the pid now belongs to another program
            os.close(pidfd)
            return
        self._watched[name] = (entry, pidfd)
        self._by_pidfd[pidfd] = name
        self._poll.register(pidfd, select.EPOLLIN)
        self._report(entry, Event.REFLECT_OPEN)

    def _gone(self, name: str, remove_entry: bool) -> None:
        watched = self._watched.pop(name, None)
        if watched is None:
            return
        entry, pidfd = watched
        self._poll.unregister(pidfd)
        del self._by_pidfd[pidfd]
        os.close(pidfd)
        if remove_entry:
            registry.unregister(name)
        self._report(entry, Event.REFLECT_CLOSE)

    def _report(self, entry: registry.Entry, event: Event) -> None:
        address = event_address(entry, event)
        if self._filter.match(b"", address):
            self._queue.append(Captured(filter_data(entry), address, 0))

    def _read_inotify(self) -> None:
        try:
            data = os.read(self._inotify, 64 * 1024)
        except BlockingIOError:
            return
        offset = 0
        while offset < len(data):
            _wd, mask, _cookie, length = _EVENT_HEADER.unpack_from(data, offset)
            name = data[offset + 16:offset + 16 + length].split(b"\0", 1)[0].decode(errors="replace")
            offset += 16 + length
            if mask & IN_MOVED_TO:
                self._appeared(name)
            elif mask & IN_DELETE:
                self._gone(name, remove_entry=False)

    def recv_batch(self, max_count: int, timeout: float | None) -> list[Captured]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._queue:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = self._poll.poll(-1 if left is None else left)
            for fd, _mask in ready:
                if fd == self._inotify:
                    self._read_inotify()
                elif fd in self._by_pidfd:
                    self._gone(self._by_pidfd[fd], remove_entry=True)
            if deadline is not None and time.monotonic() >= deadline:
                break
        return [self._queue.popleft() for _ in range(min(max_count, len(self._queue)))]

    def verdict(self, ticket: int, raw) -> None:
        raise ReflectLayerError("a REFLECT event has no pending verdict")

    def inject(self, raw: bytes, address) -> None:
        raise ReflectLayerError("REFLECT events cannot be injected (as in WinDivert)")

    def close(self) -> None:
        for _entry, pidfd in self._watched.values():
            os.close(pidfd)
        self._watched.clear()
        self._by_pidfd.clear()
        for fd in (self._inotify, self._directory):
            if fd >= 0:
                os.close(fd)
        self._inotify = self._directory = -1
        self._poll.close()

    def fileno(self) -> int | None:
        return None if self._poll.closed else self._poll.fileno()
