"""Live capture in a network namespace with two programs sending: each packet shows its program,
holding one program's packets holds only those, and filtering on one shows only its packets."""

import contextlib
import socket

import numpy as np
import pytest

from tests.gui.conftest import start_live_capture
from tests.gui.test_live_hold_edit import namespace  # noqa: F401 (a fixture)
from tests.integration.conftest import receive_expected
from tests.integration.test_processes_netns import say, start_sender

pytestmark = pytest.mark.netns


@contextlib.contextmanager
def live_capture_of_senders(qtbot, namespace, cgroup: str, senders: int = 2):  # noqa: F811
    """A workbench on live capture, a UDP receiver and `senders` sending programs, all in
    `namespace`; yields (bench, receiver, [(program, pid, port)]) and stops them all after."""
    from divertgui.app import Workbench
    from divertgui.views.capture_options import CaptureOptions
    with namespace.entered():
        bench = Workbench(CaptureOptions(source="live", cgroup=cgroup))
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.bind(("127.0.0.1", 0))
    port = receiver.getsockname()[1]
    programs = [start_sender(namespace, "udp", port) for _ in range(senders)]
    qtbot.addWidget(bench.window)
    try:
        start_live_capture(qtbot, bench.window, f"udp.DstPort == {port}", "")
        yield bench, receiver, programs
    finally:
        for program, _, _ in programs:
            program.stdin.close()
            program.wait(timeout=10)
        receiver.close()
        assert bench.close(), "the session thread did not stop"


def test_each_packet_shows_its_process_and_one_process_is_held_or_shown_alone(qtbot, namespace,  # noqa: F811
                                                                              capture_cgroup):
    from divertgui.models.packet_table import PROCESS
    from divertgui.views.conversations_dialog import ConversationsDialog
    with live_capture_of_senders(qtbot, namespace, capture_cgroup) as (bench, receiver, programs):
        (first, first_pid, first_port), (second, second_pid, second_port) = programs
        window = bench.window
        model = window.table_model
        say(first, "first before")
        say(second, "second before")
        receive_expected(receiver, 2)
        qtbot.waitUntil(lambda: model.rowCount() == 2, timeout=10000)
        qtbot.waitUntil(lambda: not window.table.isColumnHidden(PROCESS), timeout=5000)
        pid_of_port = {first_port: first_pid, second_port: second_pid}
        for view_row in range(2):
            row = model.store_row(view_row)
            pid = pid_of_port[model.value("src_port", row)]
            assert window.store.process(row).pid == pid
            assert model.index(view_row, PROCESS).data().endswith(f"({pid})")
        first_row = next(r for r in range(2) if model.value("src_port", model.store_row(r)) == first_port)
        window.navigation.select_view_row(first_row)
        assert f"({first_pid})" in window.details.tree.topLevelItem(0).text(0)
        window.process_actions.hold_process(window.process_actions.current_process().pid)
        # The packets below are sent once the session has taken the command, not while it is on its way.
        qtbot.waitUntil(lambda: bench.bridge.session.hold_pids == {first_pid}, timeout=5000)

        for i in range(2):
            say(first, f"first held {i}")
            say(second, f"second passes {i}")
        assert sorted(receive_expected(receiver, 2)) == [b"second passes 0", b"second passes 1"]
        qtbot.waitUntil(lambda: window.queue_model.rowCount() == 2, timeout=10000)
        qtbot.waitUntil(lambda: model.rowCount() == 6, timeout=10000)
        for view_row in range(2, 6):
            row = model.store_row(view_row)
            held = model.verdict_name(row) == "held"
            assert held == (window.store.process(row).pid == first_pid), (row, model.verdict_name(row))
        window.process_actions.filter_process(second_pid)
        assert model.rowCount() == 3
        assert {window.store.process(model.store_row(r)).pid for r in range(3)} == {second_pid}
        window.process_actions.filter_process(None)
        assert model.rowCount() == 6
        window.processes.refresh()
        totals = window.processes.totals
        by_pid = {int(pid): i for i, pid in enumerate(totals.pids)}
        assert set(by_pid) == {first_pid, second_pid}
        first_at, second_at = by_pid[first_pid], by_pid[second_pid]
        assert (totals.packets[first_at], totals.held[first_at], totals.flows[first_at]) == (3, 2, 1)
        assert (totals.packets[second_at], totals.held[second_at]) == (3, 0)
        assert totals.bytes_out[second_at] > 0 and totals.bytes_in[second_at] == 0
        window.processes.select_process(second_pid, int(totals.hosts[second_at]))
        window.processes.filter_action.trigger()
        assert model.rowCount() == 3 and window.table_model.process_pid == second_pid
        window.process_actions.filter_process(None)
        dialog = window.streams.conversations_dialog(ConversationsDialog.PROCESSES)
        assert dialog.process_model.rowCount() == 2
        dialog.close()
        window.post("forward_all")
        assert sorted(receive_expected(receiver, 2)) == [b"first held 0", b"first held 1"]


def chart_counts(chart) -> dict[str, int]:
    """Packets per legend entry, read back from the per-process chart's stacked curves."""
    from divertgui.models.stats import BIN_SECONDS
    below = None
    counts = {}
    for label, curve in zip(chart.labels, chart.stack.curves):
        _, top = curve.getData()
        top = np.zeros(0) if top is None else top
        layer = top - below if below is not None and len(below) == len(top) else top
        counts[label] = int(round(float(layer.sum()) * BIN_SECONDS))
        below = top
    return counts


def test_the_per_process_chart_shows_each_program_live_and_from_its_saved_capture(qtbot, namespace, tmp_path,
                                                                                  capture_cgroup):  # noqa: F811
    with live_capture_of_senders(qtbot, namespace, capture_cgroup) as (bench, receiver, programs):
        (first, first_pid, _), (second, second_pid, _) = programs
        window = bench.window
        model = window.table_model
        chart = window.charts.process_chart
        for i in range(3):
            say(first, f"first {i}")
        for i in range(5):
            say(second, "s" * (10 + i))
        receive_expected(receiver, 8)
        qtbot.waitUntil(lambda: model.rowCount() == 8, timeout=10000)
        labels = {pid: window.store.processes.of_pid(pid).label() for pid in (first_pid, second_pid)}
        expected = {labels[first_pid]: 3, labels[second_pid]: 5, "other": 0}
        # The newest quarter second is left out while capturing, until the clock has moved past it.
        qtbot.waitUntil(lambda: chart_counts(chart) == expected, timeout=10000)
        assert chart.labels == [labels[second_pid], labels[first_pid], "other"], "most bytes first"
        assert all(label in chart.legend.text() for label in labels.values())

        chart.units.setCurrentText("bytes/s")
        window.charts.redraw()
        sizes = window.store.column("length", 0, 8)
        processes = window.store.processes.pids()[window.store.column("process", 0, 8)]
        drawn = chart_counts(chart)
        for pid in (first_pid, second_pid):
            assert drawn[labels[pid]] == int(sizes[processes == pid].sum())

        # A display filter and the process filter together; the status bar says how many are shown.
        window.apply_display_filter("udp.PayloadLength < 13")
        assert model.rowCount() == 6, "first's 3 and second's payloads of 10, 11 and 12 bytes"
        assert window.status_line.labels["displayed"].text() == "Displayed: 6 of 8"
        window.process_actions.filter_process(second_pid)
        assert model.rowCount() == 3
        assert window.status_line.labels["displayed"].text() == "Displayed: 3 of 8"
        say(first, "first, after")
        say(second, "s" * 12)
        say(second, "s" * 13)
        receive_expected(receiver, 3)
        qtbot.waitUntil(lambda: window.count == 11, timeout=10000)
        qtbot.waitUntil(lambda: window.status_line.labels["displayed"].text() == "Displayed: 4 of 11")
        assert model.rowCount() == 4
        assert {window.store.process(model.store_row(r)).pid for r in range(4)} == {second_pid}
        window.process_actions.filter_process(None)
        window.apply_display_filter("")
        assert not window.status_line.labels["displayed"].isVisible()

        window.stop_capture()
        qtbot.waitUntil(lambda: not window.running and window.count == 11, timeout=5000)
        path = tmp_path / "two-programs.pcapng"
        assert window.files.save_capture(str(path)) == 11
        before = window.store.generation
        window.files.open_capture(str(path))
        qtbot.waitUntil(lambda: window.generation != before and window.count == 11, timeout=10000)
        assert {window.store.process(r).pid for r in range(11)} == {first_pid, second_pid}
        chart.units.setCurrentText("packets/s")
        qtbot.waitUntil(lambda: chart_counts(chart) == {labels[second_pid]: 7, labels[first_pid]: 4, "other": 0},
                        timeout=10000)
