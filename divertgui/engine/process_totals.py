"""Per-process totals of a capture: packets, bytes each way, flows and held
packets of every local process the store's rows name, from its columns."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from divertgui.engine.store import CaptureStore, Verdict


class ProcessTotals(NamedTuple):
    """One entry per process (by pid), arrays in the order of `pids`."""

    pids: np.ndarray
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


def process_totals(store: CaptureStore, rows: np.ndarray | None = None) -> ProcessTotals:
    """Totals over `rows` (default: every row); a process named twice (its pid, another name) counts once."""
    columns = {name: store.column(name) for name in ("process", "length", "outbound", "verdict", "conversation")}
    if rows is not None:
        columns = {name: values[rows] for name, values in columns.items()}
    index = columns["process"].astype(np.int64)
    known = index != 0
    pids_per_row = store.processes.pids()[index[known]]
    pids, group = np.unique(pids_per_row, return_inverse=True)
    count = len(pids)
    length = columns["length"][known].astype(np.int64)
    outbound = columns["outbound"][known]

    def total(values) -> np.ndarray:
        return np.bincount(group, weights=values, minlength=count).astype(np.int64)

    pairs = np.unique(np.stack([group, columns["conversation"][known].astype(np.int64)]), axis=1)
    latest = [store.processes.of_pid(int(pid)) for pid in pids]
    return ProcessTotals(
        pids=pids, names=[p.name for p in latest], users=[p.user for p in latest],
        packets=np.bincount(group, minlength=count).astype(np.int64),
        flows=np.bincount(pairs[0], minlength=count).astype(np.int64) if count else np.zeros(0, np.int64),
        bytes_out=total(np.where(outbound, length, 0)), bytes_in=total(np.where(outbound, 0, length)),
        held=total(columns["verdict"][known] == Verdict.HELD),
        unattributed=int((~known).sum()))
