"""Where a capture service's rows sit in the window's store.

Several services append to one store, so one service's rows are runs
between the others'. A run is kept per batch of packets at most (adjacent
batches make one run), and runs from an earlier generation of the store
(before it was emptied) are forgotten: their rows are gone.
"""

from __future__ import annotations

import numpy as np

SERVICE_START, STORE_START, LENGTH = range(3)


class RowMap:
    def __init__(self) -> None:
        self.generation: int | None = None
        self.service_rows = 0              # rows the service has sent since its store was last emptied
        self.store_count = 0               # the store's count after this service's newest row
        self._runs = np.zeros((16, 3), np.int64)
        self._count = 0

    def service_cleared(self) -> None:
        """The service emptied its store: its row numbers start again from 0."""
        self.service_rows = 0
        self._count = 0

    def added(self, rows: range, generation: int) -> None:
        """The service's next len(rows) rows were stored as `rows` of store `generation`."""
        if generation != self.generation:
            self.generation = generation
            self._count = 0
        last = self._runs[self._count - 1] if self._count else None
        if last is not None and last[STORE_START] + last[LENGTH] == rows.start \
                and last[SERVICE_START] + last[LENGTH] == self.service_rows:
            last[LENGTH] += len(rows)
        else:
            if self._count == len(self._runs):
                self._runs = np.concatenate([self._runs, np.zeros_like(self._runs)])
            self._runs[self._count] = (self.service_rows, rows.start, len(rows))
            self._count += 1
        self.service_rows += len(rows)
        self.store_count = rows.stop

    def store_rows(self, service_rows, generation: int) -> np.ndarray:
        """The store rows of `service_rows`; -1 for those not in store `generation`."""
        service_rows = np.asarray(service_rows, np.int64)
        if generation != self.generation or not self._count:
            return np.full(len(service_rows), -1, np.int64)
        runs = self._runs[:self._count]
        run = np.searchsorted(runs[:, SERVICE_START], service_rows, side="right") - 1
        chosen = runs[np.maximum(run, 0)]
        offset = service_rows - chosen[:, SERVICE_START]
        inside = (run >= 0) & (offset >= 0) & (offset < chosen[:, LENGTH])
        return np.where(inside, chosen[:, STORE_START] + offset, -1)

    def store_row(self, service_row: int, generation: int) -> int:
        return int(self.store_rows([service_row], generation)[0])
