"""Coroutines waiting for a handle's descriptor to become readable, without a thread.

Each event loop that has a coroutine waiting watches the descriptor with
one `loop.add_reader`, removed as soon as it fires (the descriptor stays
readable until the packets are read, so a reader left in place would fire
on every turn of the loop) or when the last waiter of that loop leaves.
"""

from __future__ import annotations

import asyncio
import threading

# How often a coroutine looks again at a source with no descriptor: the demo
# network and replayed files, whose packets fall due on a clock.
CLOCK_SOURCE_POLL = 0.01


class ReadableWaiters:
    """The coroutines, per event loop, waiting for one handle's descriptor."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[asyncio.AbstractEventLoop, tuple[int | None, set[asyncio.Future]]] = {}

    async def wait(self, fd: int | None, timeout: float | None) -> None:
        """Until `fd` is readable, `timeout` seconds pass or wake_all() is called.

        With no descriptor (None), until CLOCK_SOURCE_POLL seconds pass at most.
        Cancelling the wait consumes nothing.
        """
        loop = asyncio.get_running_loop()
        if fd is None:
            timeout = CLOCK_SOURCE_POLL if timeout is None else min(timeout, CLOCK_SOURCE_POLL)
        future = loop.create_future()
        with self._lock:
            entry = self._waiting.get(loop)
            if entry is None:
                entry = self._waiting[loop] = (fd, set())
                if fd is not None:
                    loop.add_reader(fd, self._fire, loop)
            entry[1].add(future)
        try:
            await asyncio.wait((future,), timeout=timeout)
        finally:
            self._leave(loop, entry, future)

    def _leave(self, loop, entry, future) -> None:
        with self._lock:
            entry[1].discard(future)
            if entry[1] or self._waiting.get(loop) is not entry:
                return
            del self._waiting[loop]
        if entry[0] is not None:
            loop.remove_reader(entry[0])

    def _fire(self, loop) -> None:
        with self._lock:
            entry = self._waiting.pop(loop, None)
        if entry is None:
            return
        fd, futures = entry
        if fd is not None:
            loop.remove_reader(fd)
        for future in futures:
            if not future.done():
                future.set_result(None)

    def wake_all(self) -> None:
        """End every wait, from any thread: the handle is closing or shutting down."""
        with self._lock:
            loops = list(self._waiting)
        for loop in loops:
            try:
                loop.call_soon_threadsafe(self._fire, loop)
            except RuntimeError:
                # That loop is closed; its waits ended with it.
                pass
