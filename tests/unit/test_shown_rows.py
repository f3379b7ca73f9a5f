"""The rows a packet list shows under a display filter and a process filter, built incrementally."""

from __future__ import annotations

import numpy as np

from divertgui.engine.address import Address
from divertgui.engine.display_index import DisplayIndex
from divertgui.engine.processes import Process
from divertgui.engine.shown_rows import KeyTest, ShownRows, process_test
from divertgui.engine.store import CaptureStore, Verdict
from tests.unit.test_processes import tcp4, udp4


def fill(store: CaptureStore, processes: list[int]) -> None:
    """One packet per entry: UDP for even rows, TCP for odd ones, of the given process index."""
    raws = [udp4("10.0.0.1", 1000 + i, "10.0.0.2", 53) if (len(store) + i) % 2 == 0
            else tcp4("10.0.0.1", 1000 + i, "10.0.0.2", 80) for i in range(len(processes))]
    store.append_batch(raws, [Address(outbound=True)] * len(raws), Verdict.PASSED, 0, processes)


class CountingTest:
    """A key test that counts the values it was asked about."""

    def __init__(self, wanted: int):
        self.wanted = wanted
        self.asked = 0

    def __call__(self, values: np.ndarray) -> np.ndarray:
        self.asked += len(values)
        return values == self.wanted


def test_a_key_test_alone_tests_each_new_row_once():
    store = CaptureStore()
    counting = CountingTest(1)
    shown = ShownRows(store, key=KeyTest("process", counting))
    fill(store, [1, 2, 1, 0])
    shown.update(3)
    assert shown.rows.tolist() == [0, 2] and counting.asked == 3
    shown.update(4)
    fill(store, [2, 1])
    shown.update(6)
    assert shown.rows.tolist() == [0, 2, 5] and counting.asked == 6
    shown.update(6)
    assert counting.asked == 6 and len(shown) == 3


def test_with_a_display_filter_only_the_rows_it_accepts_are_tested_and_both_must_accept():
    store = CaptureStore()
    counting = CountingTest(1)
    shown = ShownRows(store, DisplayIndex(store, "udp"), KeyTest("process", counting))
    fill(store, [1, 1, 2, 1, 1, 0])
    shown.update(6)
    # UDP rows are 0, 2, 4; of them process 1's are 0 and 4.
    assert shown.rows.tolist() == [0, 4] and counting.asked == 3
    fill(store, [1, 1, 1])
    shown.update(8)
    assert shown.rows.tolist() == [0, 4, 6] and counting.asked == 4, "row 8 is beyond the count"
    shown.update(9)
    assert shown.rows.tolist() == [0, 4, 6, 8] and counting.asked == 5


def test_a_display_filter_alone_shows_its_rows_below_the_count():
    store = CaptureStore()
    shown = ShownRows(store, DisplayIndex(store, "tcp"))
    fill(store, [0] * 6)
    shown.update(4)
    assert shown.rows.tolist() == [1, 3]
    shown.update(6)
    assert shown.rows.tolist() == [1, 3, 5]


def test_a_process_is_found_under_each_of_its_names_and_a_new_store_starts_again():
    store = CaptureStore()
    curl = store.processes.intern(Process(10, "curl", "root"))
    nc = store.processes.intern(Process(11, "nc", "root"))
    shown = ShownRows(store, key=process_test(store, 10))
    fill(store, [curl, nc, 0])
    shown.update(3)
    renamed = store.processes.intern(Process(10, "curl-renamed", "root"))
    fill(store, [renamed, nc])
    shown.update(5)
    assert shown.rows.tolist() == [0, 3]
    store.clear()
    fill(store, [nc, renamed])
    shown.update(2)
    assert shown.rows.tolist() == [1]
