"""Reading an eBPF ring buffer map (BPF_MAP_TYPE_RINGBUF) from user space.

The kernel maps one writable page holding the consumer position, then,
read-only, a page holding the producer position followed by the data area
mapped twice in a row (so a record never wraps). Each record starts with an
8-byte header: its length with two flag bits (busy: still being written;
discard: to be skipped), then the record, padded to 8 bytes. This is
libbpf's ring_buffer__consume, in Python.
"""

from __future__ import annotations

import mmap
import os
import select
import struct

_BUSY, _DISCARD = 1 << 31, 1 << 30
_HEADER = 8


class RingBuffer:
    def __init__(self, map_fd: int, size: int):
        page = mmap.PAGESIZE
        self.fd = map_fd
        self.mask = size - 1
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._producer = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._data_start = page
        self._poll = select.poll()
        self._poll.register(map_fd, select.POLLIN)

    def wait(self, timeout: float | None) -> None:
        """Until a record may be there, or `timeout` seconds pass."""
        self._poll.poll(None if timeout is None else max(0, int(timeout * 1000)))

    def records(self, limit: int) -> list[bytes]:
        """Up to `limit` complete records, oldest first; each is consumed."""
        out: list[bytes] = []
        consumer = struct.unpack_from("<Q", self._consumer, 0)[0]
        producer = struct.unpack_from("<Q", self._producer, 0)[0]
        while consumer < producer and len(out) < limit:
            start = self._data_start + (consumer & self.mask)
            length = struct.unpack_from("<I", self._producer, start)[0]
            if length & _BUSY:
                break
            size = length & ~(_BUSY | _DISCARD)
            if not length & _DISCARD:
                out.append(self._producer[start + _HEADER:start + _HEADER + size])
            consumer += (size + _HEADER + 7) & ~7
            struct.pack_into("<Q", self._consumer, 0, consumer)
        return out

    def close(self) -> None:
        self._poll.unregister(self.fd)
        self._consumer.close()
        self._producer.close()
        os.close(self.fd)
