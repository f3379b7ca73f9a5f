"""Several capture services' rows in one store: each row names its host, each
host's rows keep their order however the readers interleave, and a service's
row numbers find their rows in the store."""

import ipaddress
import threading

import numpy as np
import pytest

from divertgui.engine.hosts import MAX_HOSTS, HostList
from divertgui.engine.store import CaptureStore
from divertgui.engine.store_record import Verdict
from divertgui.service.row_map import RowMap
from divertgui.engine.backends.demo import udp_packet

SOURCE, DESTINATION = ipaddress.ip_address("192.0.2.1").packed, ipaddress.ip_address("198.51.100.2").packed


def append_numbered(store: CaptureStore, host: int, first: int, count: int) -> tuple[range, int]:
    """`count` packets whose wall_ns says their place in their host's sequence."""
    raw = udp_packet(SOURCE, DESTINATION, 5353, 53, b"x" * host)
    lengths = np.full(count, len(raw), np.int64)
    zeros = np.zeros(count, np.int64)
    return store.append_received(np.arange(first, first + count), zeros, zeros, zeros, zeros,
                                 np.zeros(count, np.uint8), lengths, raw * count, 0, host)


def test_host_names_are_unique_and_index_0_is_the_windows_own():
    hosts = HostList()
    assert [hosts.add("web"), hosts.add("db"), hosts.add("web")] == [1, 2, 3]
    assert hosts.names() == ["", "web", "db", "web (2)"] and hosts.name(99) == ""


def test_a_window_holds_at_most_as_many_hosts_as_the_column_counts():
    hosts = HostList()
    for number in range(MAX_HOSTS):
        hosts.add(f"h{number}")
    with pytest.raises(ValueError, match="at most 255"):
        hosts.add("one more")


def test_readers_appending_at_once_keep_each_hosts_rows_in_order():
    store = CaptureStore()
    indexes = [store.hosts.add(name) for name in ("a", "b", "c")]
    maps = {index: RowMap() for index in indexes}
    start = threading.Barrier(len(indexes))

    def reader(host: int) -> None:
        start.wait()
        for batch in range(200):
            maps[host].added(*append_numbered(store, host, batch * 7, 7))

    threads = [threading.Thread(target=reader, args=(host,)) for host in indexes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    hosts, order = store.column("host"), store.column("wall_ns")
    assert len(store) == 3 * 1400
    for host in indexes:
        assert order[hosts == host].tolist() == list(range(1400))
        rows = maps[host].store_rows(np.arange(1400), store.generation)
        assert (hosts[rows] == host).all() and order[rows].tolist() == list(range(1400))
    assert store.host(0) in ("a", "b", "c")


def test_a_service_row_maps_to_its_store_row_only_in_its_generation():
    store = CaptureStore()
    mine, other = store.hosts.add("mine"), store.hosts.add("other")
    rows = RowMap()
    rows.added(*append_numbered(store, mine, 0, 3))
    append_numbered(store, other, 0, 2)
    rows.added(*append_numbered(store, mine, 3, 4))
    assert rows.store_rows(np.arange(8), store.generation).tolist() == [0, 1, 2, 5, 6, 7, 8, -1]
    assert rows.service_rows == 7 and rows.store_count == 9
    generation = store.generation
    store.clear()
    assert rows.store_row(0, store.generation) == -1
    rows.added(*append_numbered(store, mine, 7, 2))
    assert rows.store_rows([0, 7, 8], store.generation).tolist() == [-1, 0, 1]
    assert rows.store_row(0, generation) == -1
    rows.service_cleared()
    rows.added(*append_numbered(store, mine, 0, 1))
    assert rows.store_row(0, store.generation) == 2 and rows.service_rows == 1


def test_verdicts_and_edits_for_an_emptied_generation_land_nowhere():
    store = CaptureStore()
    host = store.hosts.add("far")
    append_numbered(store, host, 0, 3)
    old = store.generation
    store.set_verdicts_in(old, [1], [Verdict.DROPPED])
    assert store.verdict(1) == Verdict.DROPPED
    store.clear()
    append_numbered(store, host, 0, 3)
    store.set_verdicts_in(old, [0, 1, 2], [Verdict.DROPPED] * 3)
    store.set_edited_in(old, 0, b"\x45")
    assert store.column("verdict").tolist() == [0, 0, 0] and not store.is_edited(0)
    store.set_edited_in(store.generation, 0, store.raw(1))
    assert store.is_edited(0) and store.verdict(0) == Verdict.MODIFIED
