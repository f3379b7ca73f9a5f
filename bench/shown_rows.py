"""The packet list's refresh while a capture grows: the display filter alone,
the display filter with a process filter (ShownRows, which tests only the
rows that arrived), and the same two filters done the way the list did them
before (the process column of every stored row tested again each refresh).

A store starts with BASE rows; each refresh appends STEP rows (demo traffic,
each packet given one of 8 processes) and brings the three lists up to date.
Prints the time per refresh of each, interleaved over rounds (medians), and
the ratio against the display filter alone.

    python bench/shown_rows.py [--base 500000] [--step 2000] [--refreshes 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.gui_ingest import demo_packets  # noqa: E402
from divertgui.engine.display_index import DisplayIndex  # noqa: E402
from divertgui.engine.processes import Process  # noqa: E402
from divertgui.engine.shown_rows import ShownRows, process_test  # noqa: E402
from divertgui.engine.store import CaptureStore, Verdict  # noqa: E402

DISPLAY_FILTER = "tcp or udp"
PROCESSES = 8
WANTED_PID = 1003


class Rescanning:
    """The list's former way: the display index, then every stored row's process tested again."""

    def __init__(self, store: CaptureStore, pid: int):
        self.store = store
        self.display = DisplayIndex(store, DISPLAY_FILTER)
        self.pid = pid

    def update(self, count: int) -> np.ndarray:
        self.display.update()
        rows = self.display.rows
        rows = rows[:np.searchsorted(rows, count)]
        indexes = self.store.processes.indexes_of_pid(self.pid)
        return rows[np.isin(self.store.column("process", 0, count)[rows], indexes)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=500_000)
    parser.add_argument("--step", type=int, default=2_000)
    parser.add_argument("--refreshes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sample = demo_packets(50_000)
    raws, addresses = [p[0] for p in sample], [p[1] for p in sample]
    rng = np.random.default_rng(1)
    timings: dict[str, list[float]] = {"display filter alone": [], "display + process, incremental": [],
                                       "display + process, rescanning": []}
    for round_number in range(args.rounds):
        store = CaptureStore()
        indexes = [store.processes.intern(Process(1000 + i, f"program{i}", "user")) for i in range(PROCESSES)]

        def append(count: int) -> None:
            while count:
                take = min(count, len(raws))
                store.append_batch(raws[:take], addresses[:take], Verdict.PASSED, time.time_ns(),
                                   rng.choice(indexes, take))
                count -= take

        append(args.base)
        lists = {"display filter alone": ShownRows(store, DisplayIndex(store, DISPLAY_FILTER)),
                 "display + process, incremental": ShownRows(store, DisplayIndex(store, DISPLAY_FILTER),
                                                             process_test(store, WANTED_PID)),
                 "display + process, rescanning": Rescanning(store, WANTED_PID)}
        for shown in lists.values():
            shown.update(len(store))
        spent = dict.fromkeys(lists, 0.0)
        for _ in range(args.refreshes):
            append(args.step)
            for name, shown in lists.items():
                started = time.perf_counter()
                shown.update(len(store))
                spent[name] += time.perf_counter() - started
        for name in lists:
            timings[name].append(spent[name] / args.refreshes)
        print(f"round {round_number + 1}  " + "  ".join(f"{name} {spent[name] / args.refreshes * 1e3:7.3f} ms"
                                                       for name in lists))
    alone = float(np.median(timings["display filter alone"]))
    print(f"\n{args.base:,} rows stored, {args.step:,} more per refresh; time per refresh (median of {args.rounds})")
    for name, values in timings.items():
        median = float(np.median(values))
        print(f"{name:32s} {median * 1e3:8.3f} ms  ratio {median / alone:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
