"""DisplayIndex: the rows of a capture store that match a display filter,
built incrementally.

A filter is decided whole arrays at a time for PLAIN rows (display_rows).
Other rows, edited rows and tests with no vectorised form (random*, ports of
non-TCP/UDP packets) go through the compiled filter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from divertgui.engine.address import Layer
from divertgui.engine.display_rows import ADDRESSES, GUARDS, HEADER_PRESENT, INDEXED, VALUES, Rows, address_words

if TYPE_CHECKING:
    from divertgui.engine.store import CaptureStore


def _compare(values: np.ndarray, op: str, value: int) -> np.ndarray | None:
    if not -(1 << 63) <= value < (1 << 63):
        return None
    return {"==": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal,
            ">": np.greater, ">=": np.greater_equal}[op](values, value)


def _compare_128(high: np.ndarray, low: np.ndarray, op: str, value: int) -> np.ndarray:
    """Compare (high << 64 | low) with a 128-bit value; high/low are uint64."""
    vh, vl = np.uint64(value >> 64), np.uint64(value & ((1 << 64) - 1))
    less = (high < vh) | ((high == vh) & (low < vl))
    equal = (high == vh) & (low == vl)
    return {"==": equal, "!=": ~equal, "<": less, "<=": less | equal,
            ">": ~(less | equal), ">=": ~less}[op]


def _test(test, rows: Rows) -> np.ndarray | None:
    """The plain rows a Test accepts, or None when it has no vectorised form."""
    name, op, value = test.field, test.op, test.value
    if name in ADDRESSES:
        guard = HEADER_PRESENT[name.split(".")[0]](rows)
        high, low = address_words(rows, ADDRESSES[name])
        return guard & _compare_128(high, low, op, value)
    if name in ("localAddr", "remoteAddr"):
        outbound = rows.col("outbound")
        local = outbound if name == "localAddr" else ~outbound
        src, dst = np.where(rows.version == 4, 12, 8), np.where(rows.version == 4, 16, 24)
        high, low = address_words(rows, np.where(local, src, dst))
        return _compare_128(high, low, op, value)
    if name in INDEXED:
        size = INDEXED[name]
        guard = np.ones(rows.n, bool) if name.startswith("packet") else HEADER_PRESENT[name.split(".")[0]](rows)
        base = (np.zeros(rows.n, np.int64) if name.startswith("packet")
                else rows.tcp_payload if name.startswith("tcp") else rows.transport + 8)
        at = base + test.index if test.index >= 0 else rows.length + test.index
        present = guard & rows.in_range(at, size, base)
        result = _compare(rows.word(at, size), op, value)
        return None if result is None else present & result
    values_of = VALUES.get(name)
    if values_of is None:
        return None
    result = _compare(values_of(rows), op, value)
    if result is None:
        return None
    guard = GUARDS.get(name)
    return result & HEADER_PRESENT[guard](rows) if guard else result


def _decide(node, rows: Rows) -> tuple[np.ndarray, bool]:
    """(a superset of the plain rows `node` accepts, whether it is exactly those rows)."""
    from divertgui.engine.filter.ast import And, Const, Cond, Or, Test
    if isinstance(node, Const):
        return np.full(rows.n, bool(node.value)), True
    if isinstance(node, Test):
        accepted = _test(node, rows)
        return (np.ones(rows.n, bool), False) if accepted is None else (accepted, True)
    if isinstance(node, (And, Or)):
        left, left_exact = _decide(node.left, rows)
        right, right_exact = _decide(node.right, rows)
        return (left & right if isinstance(node, And) else left | right), left_exact and right_exact
    if isinstance(node, Cond):
        test, test_exact = _decide(node.test, rows)
        then, then_exact = _decide(node.then, rows)
        otherwise, otherwise_exact = _decide(node.otherwise, rows)
        if test_exact:
            return (test & then) | (~test & otherwise), then_exact and otherwise_exact
        return then | otherwise, False
    return np.ones(rows.n, bool), False


class DisplayIndex:
    """The rows of a store that match a display filter, kept up to date by update().

    `filter` is filter text ("" shows every row, even unparsable ones),
    compiled with compile_filter at `layer`, or an already compiled Filter
    (anything with match(raw, address); its syntax `tree`, when it has one,
    lets whole columns be decided at once). Rows decided from the columns
    and arena bytes never reach match().
    """

    def __init__(self, store: CaptureStore, filter, layer: Layer = Layer.NETWORK) -> None:
        self.store = store
        if isinstance(filter, str):
            self.text = filter.strip()
            if self.text:
                from divertgui.engine.filter import compile_filter
                filter = compile_filter(self.text, layer)
        else:
            self.text = getattr(filter, "text", "")
        self._match = filter.match if self.text or not isinstance(filter, str) else None
        self._tree = getattr(filter, "tree", None) if self._match is not None else None
        self._generation = store.generation
        self._done = 0
        self._edits_seen = 0
        self._parts: list[np.ndarray] = []
        self._rows: np.ndarray | None = np.zeros(0, np.int64)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def rows(self) -> np.ndarray:
        if self._rows is None:
            self._rows = np.concatenate(self._parts) if self._parts else np.zeros(0, np.int64)
            self._parts = [self._rows]
        return self._rows

    def update(self) -> int:
        """Index the rows appended since the last update; returns how many of them match.

        `rows` only grows here; edits of rows already indexed wait for recheck_edits().
        """
        store = self.store
        if store.generation != self._generation:
            self._generation = store.generation
            self._done, self._parts, self._rows, self._count = 0, [], np.zeros(0, np.int64), 0
            self._edits_seen = 0
        start, stop = self._done, len(store)
        if stop <= start:
            return 0
        if self._match is None:
            found = np.arange(start, stop, dtype=np.int64)
        else:
            found = self._scan(start, stop)
        self._done = stop
        if len(found):
            self._parts.append(found)
            self._rows = None
            self._count += len(found)
        return len(found)

    def recheck_edits(self) -> bool:
        """Decide again the indexed rows edited since the last recheck; True when `rows` changed."""
        log = self.store.edit_log
        if self._edits_seen >= len(log) or self._match is None:
            self._edits_seen = len(log)
            return False
        rows = {row for row in log[self._edits_seen:] if row < self._done}
        self._edits_seen = len(log)
        if not rows:
            return False
        store = self.store
        now_in = np.array(sorted(r for r in rows if self._match(store.raw(r), store.address(r))), np.int64)
        now_out = np.array(sorted(rows), np.int64)
        updated = np.union1d(np.setdiff1d(self.rows, now_out), now_in)
        changed = not np.array_equal(updated, self.rows)
        self._parts, self._rows, self._count = [updated], updated, len(updated)
        return changed

    def _scan(self, start: int, stop: int) -> np.ndarray:
        rows = Rows(self.store, start, stop)
        if self._tree is not None:
            candidates, exact = _decide(self._tree, rows)
        else:
            candidates, exact = np.ones(rows.n, bool), False
        # The arrays speak for plain rows only; every other row is a candidate.
        candidates |= ~rows.plain
        decided = rows.plain if exact else np.zeros(rows.n, bool)
        accepted = candidates & decided
        undecided = np.flatnonzero(candidates & ~decided)
        if len(undecided):
            store, match = self.store, self._match
            hits = [i for i in undecided.tolist() if match(store.raw(start + i), store.address(start + i))]
            accepted[hits] = True
        return np.flatnonzero(accepted).astype(np.int64) + start
