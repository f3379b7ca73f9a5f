"""ShownRows: the rows a packet list shows, those a display filter and a key test
(this process's packets, say) both accept, built incrementally.

Each update tests only the rows that arrived since the last one: the rows
the display index newly accepted, or every new row without a display
filter. A row's key (its process, its host) is fixed when it is stored, so
a row decided once stays decided.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, NamedTuple, Sequence

import numpy as np

if TYPE_CHECKING:
    from divertgui.engine.display_index import DisplayIndex
    from divertgui.engine.store import CaptureStore


class KeyTest(NamedTuple):
    """Rows whose `column` values `accepts` (values -> booleans, a whole array at a time)."""

    column: str
    accepts: Callable[[np.ndarray], np.ndarray]


def process_test(store: CaptureStore, pid: int) -> KeyTest:
    """The rows of process `pid`, whatever names it had."""
    return KeyTest("process", lambda indexes: store.processes.pids()[indexes] == pid)


def host_test(host: int) -> KeyTest:
    """The rows of store host index `host`."""
    return KeyTest("host", lambda indexes: indexes == host)


class ShownRows:
    """The rows below a count that `display` (None: every row) and `key` (None: any; or several
    KeyTests, every one of which must accept a row) accept."""

    def __init__(self, store: CaptureStore, display: DisplayIndex | None = None,
                 key: KeyTest | Sequence[KeyTest] | None = None):
        self.store = store
        self.display = display
        self.keys: tuple[KeyTest, ...] = () if key is None else (key,) if isinstance(key, KeyTest) else tuple(key)
        self._start()

    def _start(self) -> None:
        self._generation = self.store.generation
        self._parts: list[np.ndarray] = []
        self._rows: np.ndarray = np.zeros(0, np.int64)
        self._done = 0              # rows below this were tested
        self._display_done = 0      # of the display index's rows, how many were tested

    @property
    def rows(self) -> np.ndarray:
        if self._parts:
            self._rows = np.concatenate([self._rows, *self._parts])
            self._parts = []
        return self._rows

    def __len__(self) -> int:
        return len(self.rows)

    def update(self, count: int) -> None:
        """Takes in the rows below `count` not seen yet."""
        if self.store.generation != self._generation:
            self._start()
        display = self.display
        if display is not None:
            display.update()
            accepted = display.rows
            stop = int(np.searchsorted(accepted, count))
            if not self.keys:
                self._rows = accepted[:stop]
                return
            candidates = accepted[self._display_done:stop]
            self._display_done = stop
        else:
            candidates = np.arange(self._done, count, dtype=np.int64)
        self._done = max(self._done, count)
        for key in self.keys:
            if not len(candidates):
                break
            first = int(candidates[0])
            values = self.store.column(key.column, first, int(candidates[-1]) + 1)[candidates - first]
            candidates = candidates[key.accepts(values)]
        if len(candidates):
            self._parts.append(candidates)
