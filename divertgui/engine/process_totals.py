"""Per-process totals of a capture: packets, bytes each way, flows and held
packets of every local process the store's rows name, from its columns.

ProcessTally keeps the totals of a growing capture, taking in only the rows
appended since it was last asked; process_totals counts any set of rows once.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from divertgui.engine.processes import key_host, key_pid, process_keys
from divertgui.engine.store import CaptureStore, Verdict


class ProcessTotals(NamedTuple):
    """One entry per process (a pid on its host), arrays in the order of `pids`."""

    pids: np.ndarray
    hosts: np.ndarray            # store host indexes
    names: list[str]
    users: list[str]
    packets: np.ndarray
    flows: np.ndarray            # distinct conversations
    bytes_out: np.ndarray
    bytes_in: np.ndarray
    held: np.ndarray             # packets held now
    unattributed: int            # counted rows of no known process

    def __len__(self) -> int:
        return len(self.pids)

    def label(self, i: int) -> str:
        return f"{self.names[i]} ({int(self.pids[i])})"


# Mixes a process key into a conversation id, so that one sorted array of 64-bit keys holds the
# (process, conversation) pairs seen: two pairs share a key as rarely as two conversations do.
_PROCESS_MIX = np.uint64(0x9E3779B97F4A7C15)


class _Sums:
    """Packets, bytes each way and flows per process key (processes.process_keys), added a batch
    of rows at a time."""

    def __init__(self) -> None:
        self.keys = np.zeros(0, np.int64)                  # sorted
        self.packets = np.zeros(0, np.int64)
        self.bytes_out = np.zeros(0, np.int64)
        self.bytes_in = np.zeros(0, np.int64)
        self.flows = np.zeros(0, np.int64)
        self.latest = np.zeros(0, np.int64)                # the last process index (its name) of each key
        self._pairs = np.zeros(0, np.uint64)               # sorted (pid, conversation) keys seen
        self.unattributed = 0

    def add(self, store: CaptureStore, columns: dict[str, np.ndarray]) -> None:
        index = columns["process"].astype(np.int64)
        known = index != 0
        self.unattributed += int((~known).sum())
        processes = process_keys(store.processes, index[known], columns["host"][known])
        self._take_keys(np.unique(processes))
        slot = np.searchsorted(self.keys, processes)
        length = columns["length"][known].astype(np.int64)
        outbound = columns["outbound"][known]
        count = len(self.keys)
        # A process interned later is the same pid named again (after exec): the latest name wins.
        np.maximum.at(self.latest, slot, index[known])
        self.packets += np.bincount(slot, minlength=count)
        self.bytes_out += np.bincount(slot, weights=np.where(outbound, length, 0), minlength=count).astype(np.int64)
        self.bytes_in += np.bincount(slot, weights=np.where(outbound, 0, length), minlength=count).astype(np.int64)
        keys = columns["conversation"][known].astype(np.uint64) ^ processes.astype(np.uint64) * _PROCESS_MIX
        keys, first = np.unique(keys, return_index=True)
        at = np.searchsorted(self._pairs, keys)
        seen = at < len(self._pairs)
        seen[seen] = self._pairs[at[seen]] == keys[seen]
        self.flows += np.bincount(slot[first[~seen]], minlength=count)
        self._pairs = np.insert(self._pairs, at[~seen], keys[~seen])

    def _take_keys(self, keys: np.ndarray) -> None:
        merged = np.union1d(self.keys, keys)
        if len(merged) == len(self.keys):
            return
        at = np.searchsorted(merged, self.keys)
        for name in ("packets", "bytes_out", "bytes_in", "flows", "latest"):
            grown = np.zeros(len(merged), np.int64)
            grown[at] = getattr(self, name)
            setattr(self, name, grown)
        self.keys = merged

    def totals(self, store: CaptureStore, held: np.ndarray) -> ProcessTotals:
        """The totals, with `held` (the process keys of the rows held now) counted as held."""
        held_slots = np.searchsorted(self.keys, held[held != 0])
        pids = key_pid(self.keys)
        latest = [store.processes.get(int(index)) for index in self.latest]
        return ProcessTotals(
            pids=pids, hosts=key_host(self.keys), names=[p.name for p in latest], users=[p.user for p in latest],
            packets=self.packets.copy(), flows=self.flows.copy(), bytes_out=self.bytes_out.copy(),
            bytes_in=self.bytes_in.copy(), held=np.bincount(held_slots, minlength=len(self.keys)).astype(np.int64),
            unattributed=self.unattributed)


_COLUMNS = ("process", "host", "length", "outbound", "conversation")


def process_totals(store: CaptureStore, rows: np.ndarray | None = None) -> ProcessTotals:
    """Totals over `rows` (default: every row); a process named twice (its pid, another name) counts once."""
    columns = {name: store.column(name) for name in (*_COLUMNS, "verdict")}
    if rows is not None:
        columns = {name: values[rows] for name, values in columns.items()}
    sums = _Sums()
    sums.add(store, columns)
    held = columns["verdict"] == Verdict.HELD
    return sums.totals(store, process_keys(store.processes, columns["process"][held], columns["host"][held]))


class ProcessTally:
    """process_totals of a store's first `count` rows, for a count that grows: each call takes in
    only the rows appended since the last. Held packets are counted afresh each time (a verdict
    changes when the user forwards or drops), from the verdict column alone."""

    def __init__(self, store: CaptureStore) -> None:
        self.store = store
        self._start()

    def _start(self) -> None:
        self._generation = self.store.generation
        self._done = 0
        self._sums = _Sums()

    def totals(self, count: int) -> ProcessTotals:
        store = self.store
        if store.generation != self._generation or count < self._done:
            self._start()
        try:
            if count > self._done:
                columns = {name: store.column(name, self._done, count) for name in _COLUMNS}
                if any(len(values) != count - self._done for values in columns.values()):
                    raise IndexError("the store was emptied meanwhile")
                self._sums.add(store, columns)
                self._done = count
            held = np.flatnonzero(store.column("verdict", 0, count) == Verdict.HELD)
            processes = np.array([store.value("process", int(row)) for row in held], np.int64)
            hosts = np.array([store.value("host", int(row)) for row in held], np.int64)
        except IndexError:
            # Emptied while being read: the next call starts again on the new capture.
            self._start()
            processes = hosts = np.zeros(0, np.int64)
        return self._sums.totals(store, process_keys(store.processes, processes, hosts))
