"""Several capture services in one window: each row says which host it came
from, a held packet's verdict goes back to its own service, losing one host
says so naming it while the others keep capturing, and a host that does not
answer never stops the window."""

import os
import signal
import socket

import pytest
from PySide6.QtCore import QTimer

from divertgui.app import Workbench
from divertgui.engine.store_record import Verdict
from divertgui.models.packet_table import HOST
from divertgui.views.capture_options import CaptureOptions
from divertgui.views.connection import CONNECTED, CONNECTING, LOST


@pytest.fixture
def two_hosts(qtbot):
    bench = Workbench(CaptureOptions(source="demo", rate=300.0), ["local", "local"])
    qtbot.addWidget(bench.window)
    bench.window.show()
    links = bench.hosts.links
    qtbot.waitUntil(lambda: all(link.state == CONNECTED for link in links), timeout=20000)
    yield bench
    bench.close()


def posts_to_each_host(bench) -> list[tuple[int, str, dict]]:
    """The commands each host's link is given from now on: (host index, kind, fields), sent on as before."""
    posted = []
    for link in bench.hosts.links:
        def record(kind, link=link, post=link.post, **fields):
            posted.append((link.index, kind, fields))
            post(kind, **fields)
        link.post = record
    return posted


def choose_in_packet_menu(window, text: str) -> None:
    """Opens the packet list's context menu on the selected packet and chooses its action `text`."""
    from PySide6.QtCore import QPoint
    from PySide6.QtWidgets import QApplication
    chosen = []

    def choose() -> None:
        menu = QApplication.activePopupWidget()
        action = next(action for action in menu.actions() if action.text() == text)
        chosen.append(action.text())
        menu.close()
        action.trigger()

    QTimer.singleShot(0, choose)
    window.process_actions.packet_menu(QPoint(5, 5))
    assert chosen == [text]


def rows_of(bench, host: int) -> int:
    return int((bench.store.column("host") == host).sum())


def test_each_row_names_its_host_and_held_packets_go_back_to_theirs(two_hosts, qtbot):
    bench, window = two_hosts, two_hosts.window
    first, second = (link.index for link in bench.hosts.links)
    assert bench.store.hosts.names()[1:] == ["local", "local (2)"]
    assert bench.hosts_bar.status.text() == "local ● · local (2) ●"
    window.start_capture()
    qtbot.waitUntil(lambda: rows_of(bench, first) >= 30 and rows_of(bench, second) >= 30, timeout=15000)
    assert not window.table.isColumnHidden(HOST)
    charts = window.charts
    assert charts.split_tabs.currentWidget() is charts.host_chart
    qtbot.waitUntil(lambda: charts.host_chart.labels[:2] in (["local", "local (2)"], ["local (2)", "local"]),
                    timeout=5000)

    window.process_actions.filter_host(second)
    qtbot.waitUntil(lambda: window.table_model.rowCount() > 0, timeout=5000)
    shown = [window.table_model.store_row(row) for row in range(window.table_model.rowCount())]
    assert {bench.store.host(row) for row in shown} == {"local (2)"}
    window.process_actions.filter_host(None)

    window.intercept.filter.set_text("tcp")
    window.intercept.filter.submit()
    qtbot.waitUntil(lambda: {bench.store.value("host", window.queue_model.store_row(r))
                             for r in range(window.queue_model.rowCount())} == {first, second}, timeout=15000)
    window.intercept.filter.set_text("false")
    window.intercept.filter.submit()
    held = {bench.store.value("host", window.queue_model.store_row(r)): window.queue_model.hold_id(r)
            for r in range(window.queue_model.rowCount())}
    row = window.queue_model.store_row(window.queue_model.row_of(held[second]))
    window.intercept.select(held[second])
    window.intercept.drop()
    qtbot.waitUntil(lambda: bench.store.verdict(row) == Verdict.DROPPED, timeout=5000)
    assert window.queue_model.row_of(held[first]) is not None
    window.post("forward_all")
    qtbot.waitUntil(lambda: window.queue_model.rowCount() == 0, timeout=5000)


def test_a_lost_host_says_so_and_the_others_keep_capturing(two_hosts, qtbot):
    bench, window = two_hosts, two_hosts.window
    survivor, victim = bench.hosts.links
    window.start_capture()
    qtbot.waitUntil(lambda: rows_of(bench, victim.index) >= 20, timeout=15000)
    os.kill(victim.hello["pid"], signal.SIGKILL)
    qtbot.waitUntil(lambda: victim.state == LOST, timeout=10000)
    assert window.error_banner.isVisible()
    assert window.error_banner.label.text().startswith("<b>connection:</b> local (2): ")
    assert "local (2): lost" in bench.hosts_bar.status.text()
    kept = rows_of(bench, victim.index)
    before = rows_of(bench, survivor.index)
    qtbot.waitUntil(lambda: rows_of(bench, survivor.index) >= before + 30, timeout=15000)
    assert window.running and bench.hosts.running() == [survivor.index]
    assert rows_of(bench, victim.index) == kept

    menu = bench.hosts_bar.reconnect_menu
    menu.aboutToShow.emit()
    actions = {action.text(): action for action in menu.actions() if action.text()}
    assert {text: action.isEnabled() for text, action in actions.items()} == {
        "&Every Lost Host": True, "local": False, "local (2)": True}
    actions["local (2)"].trigger()
    qtbot.waitUntil(lambda: victim.state == CONNECTED, timeout=20000)
    window.start_capture()
    qtbot.waitUntil(lambda: rows_of(bench, victim.index) >= kept + 20, timeout=15000)
    assert bench.hosts.running() == [survivor.index, victim.index]


def test_a_host_that_does_not_answer_leaves_the_window_running(workbench, qtbot, tmp_path):
    path = str(tmp_path / "busy.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(0)
    waiting = []             # fill the backlog: a connect() to it now waits until the listener goes
    while True:
        filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        filler.setblocking(False)
        waiting.append(filler)
        try:
            filler.connect(path)
        except BlockingIOError:
            break
    try:
        workbench.connect_to(f"unix:{path}")
        link = workbench.bridge
        ticks = []
        timer = QTimer()
        timer.timeout.connect(lambda: ticks.append(link.state))
        timer.start(5)
        qtbot.waitUntil(lambda: len(ticks) >= 20, timeout=20000)
        timer.stop()
        assert set(ticks) == {CONNECTING}
        assert workbench.hosts_bar.status.text() == f"connecting to unix:{path}…"
    finally:
        listener.close()
        for filler in waiting:
            filler.close()
    qtbot.waitUntil(lambda: link.state == LOST, timeout=10000)
    assert f"unix:{path}: cannot connect" in workbench.window.error_banner.label.text()


def test_rules_go_to_the_host_the_rules_panel_names(two_hosts, qtbot):
    bench, window = two_hosts, two_hosts.window
    first, second = (link.index for link in bench.hosts.links)
    panel, model = window.rules_panel, window.rules_model
    assert bench.hosts_bar.rules.isVisible()
    bench.hosts_bar.rules.choose(second)
    row = panel.add_rule("drop")
    model.set_value(row, "chance", 100.0)
    model.set_value(row, "enabled", True)
    qtbot.waitUntil(lambda: [r["kind"] for r in bench.hosts.rules_of.get(second, [])] == ["drop"], timeout=5000)
    assert bench.hosts.rules_of.get(first, []) == []
    window.start_capture()
    qtbot.waitUntil(lambda: model.counters(0).get("matched", 0) > 0, timeout=15000)
    qtbot.waitUntil(lambda: rows_of(bench, first) >= 20, timeout=15000)
    assert rows_of(bench, second) == 0          # every packet of the second host dropped by its rule

    bench.hosts_bar.rules.choose(first)
    assert model.rowCount() == 0
    bench.hosts_bar.rules.choose(second)
    assert [model.rule(r)["kind"] for r in range(model.rowCount())] == ["drop"]


def test_a_composed_packet_goes_out_on_the_host_the_capture_selector_names(two_hosts, qtbot):
    bench, window = two_hosts, two_hosts.window
    first, second = (link.index for link in bench.hosts.links)
    window.start_capture()
    qtbot.waitUntil(lambda: len(bench.hosts.running()) == 2, timeout=15000)
    injected = bytes.fromhex("4500001c000100004011f9e20a0000020a000001") + bytes.fromhex("303930390008c5b2")
    for host in (second, None):
        bench.hosts_bar.capture.choose(host)
        window.post("inject", data=injected.hex(), outbound=True, if_idx=0)
    qtbot.waitUntil(lambda: (bench.store.column("verdict") == Verdict.INJECTED).sum() == 2, timeout=10000)
    rows = (bench.store.column("verdict") == Verdict.INJECTED).nonzero()[0]
    assert sorted(bench.store.value("host", int(row)) for row in rows) == sorted([second, first])


def test_a_pid_on_two_hosts_is_two_processes_and_holding_one_asks_its_host_alone(two_hosts, qtbot):
    from divertgui.engine.processes import Process
    from tests.unit.test_processes import append_for_host, udp4
    bench, window = two_hosts, two_hosts.window
    first, second = (link.index for link in bench.hosts.links)
    curl = bench.store.processes.intern(Process(500, "curl", "root"))
    nginx = bench.store.processes.intern(Process(500, "nginx", "www"))
    append_for_host(bench.store, first, [udp4("10.0.0.1", 1000, "10.0.0.2", 53)] * 2, curl, Verdict.PASSED)
    append_for_host(bench.store, second, [udp4("10.0.0.2", 80, "10.0.0.1", 1000)] * 3, nginx, Verdict.PASSED)
    window.count = len(bench.store)
    window.table_model.refresh(window.count)
    posted = posts_to_each_host(bench)

    view = window.processes
    view.refresh()
    model = view.model
    assert not view.table.isColumnHidden(model.COLUMNS.index("Host"))
    host_column, name_column = model.COLUMNS.index("Host"), model.COLUMNS.index("Process")
    cells = sorted((model.index(r, host_column).data(), model.index(r, name_column).data())
                   for r in range(model.rowCount()))
    assert cells == [("local", "curl"), ("local (2)", "nginx")]

    view.select_process(500, second)
    view.hold_action.trigger()
    assert [(host, kind, fields["pids"]) for host, kind, fields in posted] == [(second, "set_hold_processes", [500])]
    view.filter_action.trigger()
    qtbot.waitUntil(lambda: window.table_model.rowCount() == 3, timeout=5000)
    shown = {bench.store.value("host", window.table_model.store_row(r)) for r in range(3)}
    assert shown == {second}

    # From the packet list: the selected packet's process, on that packet's host only.
    posted.clear()
    window.process_actions.filter_process(None)
    qtbot.waitUntil(lambda: window.table_model.rowCount() == 5, timeout=5000)
    first_row = next(r for r in range(5) if bench.store.value("host", window.table_model.store_row(r)) == first)
    window.navigation.select_view_row(first_row)
    choose_in_packet_menu(window, "Hold Everything from curl (500)")
    assert [(host, kind, fields["pids"]) for host, kind, fields in posted] == [(first, "set_hold_processes", [500])]
    posted.clear()
    window.process_actions.hold_process(None)
    assert sorted((host, fields["pids"]) for host, _, fields in posted) == [(first, []), (second, [])]


def test_events_name_their_host_and_start_and_stop_follow_the_capture_host_selector(two_hosts, qtbot, tmp_path):
    from divertgui.models.events_model import HOST as EVENT_HOST
    from tests.unit.test_event_records import sample_records
    bench, window = two_hosts, two_hosts.window
    (first, first_link), (second, second_link) = ((link.index, link) for link in bench.hosts.links)
    view = window.events_view
    assert not view.table.isColumnHidden(EVENT_HOST)
    records = [record.to_json() for record in sample_records()[:2]]
    for link, layers, sent in ((first_link, {"FLOW": ""}, records[:1]), (second_link, {"SOCKET": "tcp"}, records[1:])):
        link.event.emit({"type": "events", "generation": bench.store.generation, "events": sent,
                         "capturing": layers, "cgroup": ""})
    assert [view.model.index(row, EVENT_HOST).data() for row in range(2)] == ["local", "local (2)"]
    assert view.status.text().endswith("watching FLOW on local; watching SOCKET (tcp) on local (2)")
    view.table.setCurrentIndex(view.model.index(1, 0))
    view.process_action.trigger()
    assert (window.table_model.process_pid, window.table_model.process_host) == (sample_records()[1].pid, second)
    window.process_actions.filter_process(None)

    posted = posts_to_each_host(bench)
    bench.hosts_bar.capture.choose(first)
    assert view.start_button.text() == "Stop"
    view.toggle()
    assert [(host, kind) for host, kind, _ in posted] == [(first, "stop_events")]
    first_link.event.emit({"type": "events", "generation": bench.store.generation, "events": [],
                           "capturing": {}, "cgroup": ""})
    assert view.start_button.text() == "Start" and "on local;" not in view.status.text()
    bench.hosts_bar.capture.choose(second)
    assert view.start_button.text() == "Stop"

    # Saved and read back, each event keeps its host's name.
    from divertgui.engine.pcapng import CaptureReader
    from divertgui.engine.saved_capture import load_into
    from divertgui.engine.store import CaptureStore
    path = str(tmp_path / "events.pcapng")
    window.files.save_capture(path)
    loaded = load_into(CaptureStore(), CaptureReader(path))
    assert [event.host for event in loaded.events] == ["local", "local (2)"]

    os.kill(second_link.hello["pid"], signal.SIGKILL)
    qtbot.waitUntil(lambda: second_link.state == LOST, timeout=10000)
    assert view.start_button.text() == "Start" and "watching" not in view.status.text()
