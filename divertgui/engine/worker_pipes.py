"""Messages from worker processes, on one pipe each, read together.

    pipes = WorkerPipes(context)
    end = pipes.open()               # the write end, for the process about to start
    process.start(); end.close()     # the worker's alone from now on
    messages = pipes.receive(timeout)

    outbox = Outbox(end)             # in the worker
    outbox.put(message)              # from any of its threads

A worker killed while it writes leaves part of a message behind. On a pipe
every worker shares (a multiprocessing.Queue) the reader then waits forever
for the rest, and the other workers for the write lock the dead one held. On
a pipe of its own, whose write end no other process keeps open, the cut-off
message ends in end of file: that pipe is closed and the others are read on.

A worker whose reader falls behind waits in put() once its pipe is full,
rather than buffering without bound.
"""

from __future__ import annotations

import threading
from multiprocessing import connection


class WorkerPipes:
    """The reading side: one pipe per worker process started. Pipes are opened by one thread and read
    by another (the capture service's), so their list is shared under a lock."""

    def __init__(self, context):
        self._context = context
        self._lock = threading.Lock()
        self._ends: list = []

    def open(self):
        """A new pipe; its write end, to hand to one process and then close here."""
        reader, writer = self._context.Pipe(duplex=False)
        with self._lock:
            self._ends.append(reader)
        return writer

    def receive(self, timeout: float = 0.0, limit: int | None = None) -> list:
        """What the workers sent, waiting up to `timeout` for the first; at most about `limit` messages.
        A pipe at its end (its worker exited or was killed, even partway through a message) is closed."""
        with self._lock:
            ends = list(self._ends)
        messages: list = []
        for end in connection.wait(ends, timeout):
            try:
                while limit is None or len(messages) < limit:
                    messages.append(end.recv())
                    if not end.poll():
                        break
            except (EOFError, OSError):
                self._forget(end)
        return messages

    def close(self) -> None:
        with self._lock:
            ends, self._ends = self._ends, []
        for end in ends:
            end.close()

    def _forget(self, end) -> None:
        with self._lock:
            self._ends.remove(end)
        end.close()


class Outbox:
    """The writing side, in the worker: one message at a time whichever thread sends it."""

    def __init__(self, end):
        self._end = end
        self._lock = threading.Lock()

    def put(self, message) -> None:
        """Sends `message`; once the reader has closed its end (the pool is gone) nothing is read any more."""
        with self._lock:
            try:
                self._end.send(message)
            except OSError:
                pass
