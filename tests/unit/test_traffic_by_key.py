"""Traffic split by a key over time: per-bin packets and bytes of the top keys, the rest as "other"."""

from __future__ import annotations

import numpy as np

from divertgui.engine.address import Address
from divertgui.engine.processes import Process
from divertgui.engine.store import CaptureStore, Verdict
from divertgui.engine.traffic_by_key import TrafficByKey
from divertgui.models.stats import BIN_NS, OTHER, TrafficStats
from tests.unit.test_processes import udp4


def reference(bins, keys, lengths, start, stop, count, no_key=None):
    """The same answer the slow way: dicts over every row."""
    totals: dict[int, int] = {}
    for b, k, n in zip(bins, keys, lengths):
        if start <= b < stop and k != no_key:
            totals[k] = totals.get(k, 0) + n
    top = sorted(totals, key=lambda k: (-totals[k], k))[:count]
    packets = np.zeros((len(top) + 1, stop - start))
    sizes = np.zeros((len(top) + 1, stop - start))
    for b, k, n in zip(bins, keys, lengths):
        if start <= b < stop:
            slot = top.index(k) if k in top else len(top)
            packets[slot, b - start] += 1
            sizes[slot, b - start] += n
    return top, packets, sizes


def test_the_top_keys_and_other_match_counting_every_row_for_batches_in_any_order():
    rng = np.random.default_rng(7)
    traffic = TrafficByKey(no_key=0)
    bins, keys, lengths = [], [], []
    for batch in range(30):
        n = int(rng.integers(0, 40))
        # Mostly moving forward, sometimes a row of an earlier bin.
        b = np.maximum(batch + rng.integers(-3, 2, n), 0)
        k = rng.choice([0, 11, 12, 13, 14, 15, 16, 17], n)
        size = rng.integers(40, 1500, n)
        traffic.add(b, k, size)
        bins += b.tolist()
        keys += k.tolist()
        lengths += size.tolist()
    for start, stop, count in ((0, 31, 3), (10, 20, 5), (25, 40, 2), (5, 5, 3), (0, 31, 20)):
        series = traffic.top(start, stop, count)
        top, packets, sizes = reference(bins, keys, lengths, start, stop, count, no_key=0)
        assert series.keys.tolist() == top
        assert np.array_equal(series.packets, packets) and np.array_equal(series.bytes, sizes)
        assert series.packets.sum() == sum(start <= b < stop for b in bins), "every row is counted once"


def test_the_no_key_rows_are_other_and_clear_forgets_everything():
    traffic = TrafficByKey(no_key=0)
    traffic.add(np.array([0, 0, 1]), np.array([0, 0, 5]), np.array([1000, 1000, 10]))
    series = traffic.top(0, 2, 3)
    assert series.keys.tolist() == [5]
    assert series.packets.tolist() == [[0, 1], [2, 0]]
    traffic.clear()
    assert traffic.top(0, 2, 3).packets.tolist() == [[0, 0]]


def test_traffic_stats_split_by_process_per_second_under_each_process_latest_name():
    store = CaptureStore()
    stats = TrafficStats(store)
    curl = store.processes.intern(Process(10, "curl", "root"))
    nc = store.processes.intern(Process(11, "nc", "root"))
    # 3 bins: curl sends in bins 0 and 1, nc in bin 1, one packet of no process in bin 2.
    stamps = [0, BIN_NS // 2, BIN_NS, BIN_NS + 1, BIN_NS * 2]
    processes = [curl, curl, curl, nc, 0]
    raws = [udp4("10.0.0.1", 1000, "10.0.0.2", 53, b"x" * (10 * (i + 1))) for i in range(5)]
    addresses = [Address(outbound=True, timestamp=stamp) for stamp in stamps]
    store.append_batch(raws, addresses, Verdict.PASSED, 0, processes)
    stats.update(len(store))
    store.processes.intern(Process(10, "curl-exec", "root"))
    window = stats.split_window("process", seconds=60, count=5)
    assert window.labels == ["curl-exec (10)", "nc (11)", OTHER]
    assert window.keys.tolist() == [10, 11]
    per_second = 1e9 / BIN_NS
    assert len(window.x) == len(stats.window(60)[0]) == 3
    assert (window.packets / per_second).tolist() == [[2, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert (window.bytes / per_second).tolist() == [[30 + 2 * 28, 30 + 28, 0], [0, 40 + 28, 0], [0, 0, 50 + 28]]
    # While capturing, the newest bin is still being filled: both windows stop before it.
    stats.live = True
    window = stats.split_window("process", seconds=60, count=5)
    assert len(window.x) == len(stats.window(60)[0]) == 2
    assert (window.packets / per_second).tolist() == [[2, 1], [0, 1], [0, 0]]
    assert stats.split_window("process", count=1).labels == ["curl-exec (10)", OTHER]
    store.clear()
    stats.update(0)
    assert stats.split_window("process").labels == [OTHER]


def test_the_same_pid_on_two_hosts_is_two_processes_each_named_with_its_host():
    store = CaptureStore()
    stats = TrafficStats(store)
    curl = store.processes.intern(Process(10, "curl", "root"))
    raws = [udp4("10.0.0.1", 1000, "10.0.0.2", 53, b"x" * size) for size in (10, 20, 30)]
    lengths = np.array([len(raw) for raw in raws])
    for host, rows in ((store.hosts.add("web"), [0, 1]), (store.hosts.add("db"), [2])):
        count = len(rows)
        store.append_received(np.zeros(count, np.int64), np.zeros(count, np.int64), np.ones(count, np.int64),
                              np.zeros(count, np.int64), np.zeros(count, np.int64),
                              np.full(count, int(Verdict.PASSED)), lengths[rows],
                              b"".join(raws[row] for row in rows), curl, host)
    stats.update(len(store))
    window = stats.split_window("process")
    assert window.labels == ["curl (10) on web", "curl (10) on db", OTHER]
    assert window.packets.sum(axis=1).tolist() == [2 * 1e9 / BIN_NS, 1e9 / BIN_NS, 0]
