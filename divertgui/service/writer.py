"""Frames out on their own thread, so that a slow reader never stalls capture
for longer than the bounded queue lets it, and a vanished one ends the
connection instead of the process."""

from __future__ import annotations

import collections
import threading
from typing import Callable

MAX_QUEUED_BYTES = 64 << 20


class FrameWriter:
    def __init__(self, write: Callable[[bytes], object], on_gone: Callable[[str], None],
                 limit: int = MAX_QUEUED_BYTES):
        self._write = write
        self._on_gone = on_gone
        self._limit = limit
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._closing = False
        self.gone = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="frame-writer", daemon=True)
        self._thread.start()

    def send(self, frame: bytes) -> None:
        """Queue a frame; waits while the queue is full (back-pressure on the capture)."""
        with self._cond:
            while self._queued >= self._limit and not self.gone and not self._closing:
                self._cond.wait(0.1)
            if self.gone or self._closing:
                return
            self._queue.append(frame)
            self._queued += len(frame)
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                frames = list(self._queue)
                self._queue.clear()
                self._queued = 0
                self._cond.notify_all()
            try:
                self._write(b"".join(frames))
            except (OSError, ValueError) as exc:
                with self._cond:
                    self.gone = True
                    self._queue.clear()
                    self._cond.notify_all()
                self._on_gone(f"writing to the client failed: {exc}")
                return

    def close(self, timeout: float = 0.5) -> None:
        """Send what is queued (waiting at most `timeout` seconds), then stop."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
