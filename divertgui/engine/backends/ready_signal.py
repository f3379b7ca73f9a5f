"""One descriptor readable while a netlink socket is, or while packets read from it wait in user space.

An NFQUEUE handle's packets are read off its socket by whoever gets there
first, a receiver or the thread that keeps the queue flowing, and the
packets a receiver did not take yet wait in a queue in memory. A program
that waits on a descriptor (an event loop's reader) must see both: this is
an epoll over the socket and an eventfd that is set while that queue holds
packets.
"""

from __future__ import annotations

import os
import select


class ReadySignal:
    def __init__(self, sock_fd: int):
        self._event = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._poll = select.epoll()
        self._poll.register(sock_fd, select.EPOLLIN)
        self._poll.register(self._event, select.EPOLLIN)
        self._set = False

    def fileno(self) -> int:
        return self._poll.fileno()

    def update(self, waiting: bool) -> None:
        """Whether packets wait in memory now; called under the owner's lock.
        Only a change costs a system call."""
        if waiting != self._set:
            if waiting:
                os.eventfd_write(self._event, 1)
            else:
                os.eventfd_read(self._event)
            self._set = waiting

    def close(self) -> None:
        self._poll.close()
        os.close(self._event)
