"""Capture files a client hands over open, with the command that reads them.

Over a Unix socket a client may attach the open file to its `open` or
replay `start` command (SCM_RIGHTS; the command says `"attached": true`):
the service then reads what the client could open itself, its own 0600
files included, and nothing else, whoever the service runs as. What comes
is still judged: a regular file, open for reading. Files arrive ahead of
the frames that claim them and wait, a few at most, in the order sent.
"""

from __future__ import annotations

import collections
import os
import socket
import stat
import threading
from typing import BinaryIO

from divertgui.service.commands import CommandError

MAX_WAITING = 4     # files received and not yet claimed by a command


class PassedFiles:
    """The read side of a client's Unix socket: its bytes, and the files that came with them."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._waiting: collections.deque[int] = collections.deque()
        self._lock = threading.Lock()
        self.refused = 0        # files beyond MAX_WAITING, closed unread

    def read(self, size: int) -> bytes:
        data, fds, _, _ = socket.recv_fds(self._sock, size, MAX_WAITING, socket.MSG_CMSG_CLOEXEC)
        with self._lock:
            for fd in fds:
                if len(self._waiting) >= MAX_WAITING:
                    os.close(fd)
                    self.refused += 1
                else:
                    self._waiting.append(fd)
        return data

    def take(self, name: str, path: str) -> BinaryIO:
        """The file the client attached to the command being carried out, open for reading from its
        start; CommandError when none came or it is not a readable regular file."""
        with self._lock:
            fd = self._waiting.popleft() if self._waiting else None
        if fd is None:
            raise CommandError(f"{name}: the command says a file comes with it, and none came")
        import fcntl    # Linux: the service's side; the window imports this module on Windows too
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise CommandError(f"{name}: the file sent for {path[:200]} is not a regular file")
            if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE not in (os.O_RDONLY, os.O_RDWR):
                raise CommandError(f"{name}: the file sent for {path[:200]} is not open for reading")
            os.lseek(fd, 0, os.SEEK_SET)
            return open(fd, "rb", closefd=True)
        except BaseException:
            os.close(fd)
            raise

    def close(self) -> None:
        with self._lock:
            while self._waiting:
                os.close(self._waiting.popleft())


def send_with_file(sock: socket.socket, frame: bytes, fd: int) -> None:
    """`frame` on `sock`, the open file `fd` attached to its first byte."""
    sent = socket.send_fds(sock, [frame], [fd])
    if sent < len(frame):
        sock.sendall(frame[sent:])
