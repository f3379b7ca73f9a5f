"""The Processes view: a live list of the capture's processes with flows, bytes each way and
packets held, kept current while shown, new packets or not."""

from __future__ import annotations

from divertgui.engine.address import Address
from divertgui.engine.processes import Process
from divertgui.engine.store import CaptureStore, Verdict
from tests.unit.test_processes import udp4


def append(store: CaptureStore, process: int, sport: int, count: int, verdict=Verdict.PASSED, outbound=True):
    raws = [udp4("10.0.0.1", sport, "10.0.0.2", 53, b"q" * 12)] * count
    return store.append_batch(raws, [Address(outbound=outbound)] * count, verdict, 0, process)


def shown(view) -> dict[str, tuple[str, ...]]:
    """Each row's cells by process label: flows, packets, bytes out, bytes in, held."""
    model = view.model
    columns = [model.COLUMNS.index(name) for name in ("Flows", "Packets", "Bytes Out", "Bytes In", "Held")]
    rows = {}
    for row in range(model.rowCount()):
        label = f"{model.index(row, 0).data()} ({model.index(row, 1).data()})"
        rows[label] = tuple(model.index(row, column).data() for column in columns)
    return rows


def test_the_list_follows_new_packets_and_released_holds_and_keeps_the_selection(qtbot):
    from divertgui.views.processes_view import ProcessesView
    store = CaptureStore()
    curl = store.processes.intern(Process(10, "curl", "ann"))
    nc = store.processes.intern(Process(11, "nc", "ann"))
    append(store, curl, 1000, 3)
    append(store, nc, 2000, 2, Verdict.HELD)
    append(store, 0, 3000, 1)
    view = ProcessesView(store, lambda: len(store))
    qtbot.addWidget(view)
    view.show()
    qtbot.waitExposed(view)
    assert shown(view) == {"curl (10)": ("1", "3", "120", "0", "0"), "nc (11)": ("1", "2", "80", "0", "2")}
    assert view.summary.text() == "1 packets belong to no local process found"
    view.select_process(11, 0)

    # Packets arrive: only the new rows are counted; a reply and a second flow.
    append(store, curl, 1000, 1, outbound=False)
    append(store, curl, 1001, 1)
    qtbot.waitUntil(lambda: shown(view)["curl (10)"] == ("2", "5", "160", "40", "0"), timeout=5000)
    assert view.selected_process() == (11, 0)

    # No packet arrives, but the held ones are forwarded: the list says so by itself.
    for row in (3, 4):
        store.set_verdict(row, Verdict.PASSED)
    qtbot.waitUntil(lambda: shown(view)["nc (11)"][-1] == "0", timeout=5000)
    assert view.selected_process() == (11, 0)

    # A new process, and a capture emptied.
    append(store, store.processes.intern(Process(12, "dig", "ann")), 4000, 1)
    qtbot.waitUntil(lambda: "dig (12)" in shown(view), timeout=5000)
    store.clear()
    qtbot.waitUntil(lambda: shown(view) == {}, timeout=5000)
