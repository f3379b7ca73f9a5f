"""The delays lag rules gave recently, as a histogram for the charts."""

from __future__ import annotations

import numpy as np

RECENT = 4096
BINS = 40


class DelayHistogram:
    """The last RECENT delays (ms) from the "rows" events' delays_ms, in a ring buffer."""

    def __init__(self, size: int = RECENT):
        self._values = np.zeros(size, dtype=np.float64)
        self._next = 0
        self.total = 0

    def __len__(self) -> int:
        return min(self.total, len(self._values))

    def extend(self, delays_ms) -> None:
        values = np.asarray(delays_ms, dtype=np.float64)[-len(self._values):]
        if not len(values):
            return
        size = len(self._values)
        at = (self._next + np.arange(len(values))) % size
        self._values[at] = values
        self._next = (self._next + len(values)) % size
        self.total += len(values)

    def values(self) -> np.ndarray:
        return self._values[:len(self)].copy()

    def histogram(self, bins: int = BINS) -> tuple[np.ndarray, np.ndarray]:
        """(edges, counts): `bins` equal bins from the smallest delay to the largest."""
        values = self.values()
        if not len(values):
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        low, high = float(values.min()), float(values.max())
        if high - low < 1e-6:
            low, high = low - 0.5, high + 0.5
        counts, edges = np.histogram(values, bins=bins, range=(low, high))
        return edges, counts

    def percentile(self, q: float) -> float | None:
        values = self.values()
        return float(np.percentile(values, q)) if len(values) else None

    def clear(self) -> None:
        self._next = 0
        self.total = 0
