"""Traffic over time split by a key (a packet's process, its host): packets and
bytes of each key per time bin, and the keys with the most bytes over a span
of bins, every other row summed as "other".

Kept sparse, one entry per (bin, key) that had traffic, so that a capture
with thousands of short-lived processes costs what its traffic costs, not
keys × bins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, NamedTuple

import numpy as np

from divertgui.engine.processes import key_host, key_pid, process_keys

if TYPE_CHECKING:
    from divertgui.engine.store import CaptureStore


class KeySeries(NamedTuple):
    """The top keys over a span of bins, and their traffic per bin."""

    keys: np.ndarray          # most bytes first
    packets: np.ndarray       # [len(keys) + 1, bins]: one row per key, then "other"
    bytes: np.ndarray


class TrafficByKey:
    """Packets and bytes per (time bin, key), added a batch of rows at a time.

    `no_key` is the key of rows that have none (no local process): never one
    of the top keys, always counted in "other".
    """

    def __init__(self, no_key: int | None = None) -> None:
        self.no_key = no_key
        self.clear()

    def clear(self) -> None:
        self._size = 0
        self._bins = np.zeros(64, np.int64)
        self._keys = np.zeros(64, np.int64)
        self._packets = np.zeros(64, np.int64)
        self._bytes = np.zeros(64, np.int64)
        # The largest bin among the entries up to each: where a span's entries begin,
        # even when a batch's rows came out of time order.
        self._latest = np.zeros(64, np.int64)

    def add(self, bins: np.ndarray, keys: np.ndarray, lengths: np.ndarray) -> None:
        """Counts rows given by their bin, key and length (arrays of one length)."""
        if not len(bins):
            return
        order = np.lexsort((keys, bins))
        bins, keys, lengths = bins[order], keys[order], lengths[order]
        starts = np.flatnonzero(np.r_[True, (bins[1:] != bins[:-1]) | (keys[1:] != keys[:-1])])
        count = len(starts)
        self._grow(self._size + count)
        at = slice(self._size, self._size + count)
        self._bins[at] = bins[starts]
        self._keys[at] = keys[starts]
        self._packets[at] = np.diff(np.r_[starts, len(bins)])
        self._bytes[at] = np.add.reduceat(lengths, starts)
        before = self._latest[self._size - 1] if self._size else np.iinfo(np.int64).min
        self._latest[at] = np.maximum(np.maximum.accumulate(self._bins[at]), before)
        self._size += count

    def _grow(self, size: int) -> None:
        capacity = len(self._bins)
        if size <= capacity:
            return
        while capacity < size:
            capacity *= 2
        for name in ("_bins", "_keys", "_packets", "_bytes", "_latest"):
            old = getattr(self, name)
            grown = np.zeros(capacity, np.int64)
            grown[:len(old)] = old
            setattr(self, name, grown)

    def top(self, start: int, stop: int, count: int) -> KeySeries:
        """The `count` keys with the most bytes in bins start..stop-1 (ties: the smaller key first)."""
        width = max(stop - start, 0)
        first = int(np.searchsorted(self._latest[:self._size], start, side="left"))
        bins = self._bins[first:self._size]
        chosen = (bins >= start) & (bins < stop)
        bins = bins[chosen] - start
        keys, inverse = np.unique(self._keys[first:self._size][chosen], return_inverse=True)
        packets, sizes = self._packets[first:self._size][chosen], self._bytes[first:self._size][chosen]
        totals = np.bincount(inverse, weights=sizes, minlength=len(keys))
        rankable = np.flatnonzero(keys != self.no_key) if self.no_key is not None else np.arange(len(keys))
        ranked = rankable[np.argsort(-totals[rankable], kind="stable")][:count]
        slot = np.full(len(keys), len(ranked), np.int64)
        slot[ranked] = np.arange(len(ranked))
        cells = slot[inverse] * width + bins
        shape = (len(ranked) + 1, width)
        return KeySeries(keys[ranked],
                         np.bincount(cells, weights=packets, minlength=shape[0] * width).reshape(shape),
                         np.bincount(cells, weights=sizes, minlength=shape[0] * width).reshape(shape))


class KeyColumn(NamedTuple):
    """How to split a store's rows by columns: `keys(store, *values)` turns the columns' values
    into keys, `label(store, key)` names a key, and rows of key `none` have no key."""

    columns: tuple[str, ...]
    keys: Callable[..., np.ndarray]
    label: Callable[[CaptureStore, int], str]
    none: int | None = None


def _hosts(store: CaptureStore, indexes: np.ndarray) -> np.ndarray:
    return indexes.astype(np.int64)


def host_label(store: CaptureStore, index: int) -> str:
    return store.hosts.name(index) or "this window"


# By capture service: every row has one (index 0, the window's own session, included).
BY_HOST = KeyColumn(("host",), _hosts, host_label)

def _processes(store: CaptureStore, indexes: np.ndarray, hosts: np.ndarray) -> np.ndarray:
    return process_keys(store.processes, indexes, hosts)


def _process_label(store: CaptureStore, key: int) -> str:
    pid, host = key_pid(key), key_host(key)
    process = store.processes.of_pid(pid)
    label = process.label() if process is not None else f"({pid})"
    return f"{label} on {host_label(store, host)}" if len(store.hosts) > 1 else label


# By pid on its host: a process named again (after exec) stays one series, under its latest name.
BY_PROCESS = KeyColumn(("process", "host"), _processes, _process_label, none=0)
