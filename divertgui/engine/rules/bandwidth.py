"""Bandwidth: a token bucket per direction, with a queue of limited length."""

from __future__ import annotations

import collections

from divertgui.engine.rules.base import Param, Rule

_NS = 1_000_000_000


class _Bucket:
    __slots__ = ("tokens", "stamp", "queue")

    def __init__(self, tokens: float):
        self.tokens = tokens
        self.stamp: int | None = None
        self.queue: collections.deque = collections.deque()


class Bandwidth(Rule):
    """Each direction passes at most `kbps` kilobits per second (1 kbit = 1000 bits)
    of IP packet bytes, with bursts up to `burst_bytes` (0: one full-size
    packet, 1514 bytes, or 5 ms at the rate if that is more). Packets beyond
    the rate wait in a queue of `queue_limit` packets; beyond that they are dropped.
    A packet larger than the bucket leaves when the bucket is full, borrowing
    the difference from what follows."""

    kind = "bandwidth"
    params = {
        "kbps": Param(80.0, 1, 10_000_000),
        "queue_limit": Param(100, 1, 100_000),
        "burst_bytes": Param(0, 0, 100_000_000),
    }

    def setup(self) -> None:
        self._bytes_per_ns = self.kbps * 1000 / 8 / _NS
        self._capacity = float(self.burst_bytes or max(1514, self.kbps * 1000 / 8 * 0.005))
        self._buckets = {False: _Bucket(self._capacity), True: _Bucket(self._capacity)}

    def adopt(self, old: Rule) -> None:
        """Queued packets stay queued and leave at the new rate; a smaller bucket caps the tokens."""
        super().adopt(old)
        self._buckets = old._buckets
        for bucket in self._buckets.values():
            bucket.tokens = min(bucket.tokens, self._capacity)

    def _refill(self, bucket: _Bucket, now_ns: int) -> None:
        bucket.tokens, bucket.stamp = self._refilled(bucket, now_ns)

    def _refilled(self, bucket: _Bucket, now_ns: int) -> tuple[float, int]:
        """The bucket's tokens and stamp once refilled at `now_ns`."""
        if bucket.stamp is None:
            return bucket.tokens, now_ns
        if now_ns > bucket.stamp:
            return min(self._capacity, bucket.tokens + (now_ns - bucket.stamp) * self._bytes_per_ns), now_ns
        return bucket.tokens, bucket.stamp

    def _fits(self, bucket: _Bucket, size: int) -> bool:
        return bucket.tokens >= min(size, self._capacity)

    def process(self, packet, now_ns: int, out: list) -> None:
        bucket = self._buckets[packet.address.outbound]
        self._refill(bucket, now_ns)
        if bucket.queue:
            self._drain(bucket, out)
        size = len(packet)
        if not bucket.queue and self._fits(bucket, size):
            bucket.tokens -= size
            out.append(packet)
        elif len(bucket.queue) < self.queue_limit:
            self.counters["delayed"] += 1
            bucket.queue.append(packet)
        else:
            self.counters["dropped"] += 1

    def pass_matched(self, packets, now_ns: int) -> bool:
        """Each direction's bucket, refilled once as process would on its first packet (the
        refills after it, at the same time, change nothing), covers every packet in turn."""
        buckets = self._buckets
        if buckets[False].queue or buckets[True].queue:
            return False
        sizes: dict = {}
        for packet in packets:
            sizes.setdefault(packet.address.outbound, []).append(len(packet))
        after = {}
        capacity = self._capacity
        for side, lengths in sizes.items():
            left, stamp = self._refilled(buckets[side], now_ns)
            total = sum(lengths)
            if left >= total:
                # Each packet finds at least its size left; whole-byte steps down from a float
                # that stays at or above 0 are exact, so one subtraction leaves what they would.
                after[side] = (left - total, stamp)
                continue
            for size in lengths:
                if left < min(size, capacity):
                    return False
                left -= size
            after[side] = (left, stamp)
        for side, (left, stamp) in after.items():
            buckets[side].tokens, buckets[side].stamp = left, stamp
        return True

    def _drain(self, bucket: _Bucket, out: list) -> None:
        queue = bucket.queue
        while queue and self._fits(bucket, len(queue[0])):
            packet = queue.popleft()
            bucket.tokens -= len(packet)
            out.append(packet)

    def due(self, now_ns: int) -> list:
        ready: list = []
        for bucket in self._buckets.values():
            if bucket.queue:
                self._refill(bucket, now_ns)
                self._drain(bucket, ready)
        return ready

    def next_deadline(self) -> int | None:
        deadlines = []
        for bucket in self._buckets.values():
            if bucket.queue:
                missing = min(len(bucket.queue[0]), self._capacity) - bucket.tokens
                deadlines.append(bucket.stamp + max(0, int(missing / self._bytes_per_ns) + 1))
        return min(deadlines, default=None)

    def release_all(self) -> list:
        ready: list = []
        for bucket in self._buckets.values():
            ready.extend(bucket.queue)
            bucket.queue.clear()
        return ready

    def held(self) -> int:
        return sum(len(b.queue) for b in self._buckets.values())
