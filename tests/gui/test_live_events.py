"""The Events view through the window's own capture service: real programs in a network
namespace (and a cgroup of the test's own) make SOCKET and FLOW events with their pids, a
handle the test opens makes a REFLECT OPEN; the events filter the packet list, and File >
Save and Open bring them back."""

import os
import sys

import pytest
from PySide6.QtWidgets import QAbstractItemView

from divertgui.engine.address import Event, Flag, Layer
from divertgui.engine.backends.cgroups import cgroup2_mount
from tests.gui.conftest import start_live_capture
from tests.gui.test_docs_screenshots import DOCS_IMAGES, WINDOW_SIZE, check_picture
from tests.gui.test_live_hold_edit import namespace  # noqa: F401 (a fixture)
from tests.integration.socket_layer_fixtures import SNIFF, own_cgroup, run_in, socket_handle, start_in  # noqa: F401
from tests.integration.test_flow_layer import SERVER

pytestmark = pytest.mark.netns
PORT, OTHER_PORT = 8093, 8094


def _seen(model, layer: Layer, event: Event, pid: int, test=lambda record: True):
    return [r for r in model.records if (r.layer, r.event, r.pid) == (layer, event, pid) and test(r)]


def test_socket_flow_and_reflect_events_show_live_filter_the_packets_and_come_back_from_a_file(
        qtbot, namespace, own_cgroup, tmp_path, capture_cgroup):  # noqa: F811
    from divertgui.app import Workbench
    from divertgui.views.capture_options import CaptureOptions
    with namespace.entered():
        bench = Workbench(CaptureOptions(source="live", cgroup=capture_cgroup), "local")
    window = bench.window
    qtbot.addWidget(window)
    view, model = window.events_view, window.events_view.model
    try:
        qtbot.waitUntil(lambda: bench.hello is not None, timeout=20000)
        window.resize(*WINDOW_SIZE)
        window.show()
        window.mode.setCurrentText("sniff")
        start_live_capture(qtbot, window, f"tcp.DstPort == {PORT} or tcp.SrcPort == {PORT} or "
                                          f"tcp.DstPort == {OTHER_PORT} or tcp.SrcPort == {OTHER_PORT}", "")
        window.events_dock.show()
        view.cgroup.setText(os.path.relpath(own_cgroup, cgroup2_mount()))
        view.start_button.click()
        qtbot.waitUntil(lambda: view.capturing or bool(window.errors), timeout=10000)
        assert set(model.capturing()) == {"FLOW", "SOCKET", "REFLECT"}, window.errors

        server = start_in(namespace, own_cgroup, sys.executable, "-c", SERVER, "127.0.0.1", str(PORT))
        assert server.stdout.readline().strip() == "listening"
        curl_pid, curl = run_in(namespace, own_cgroup, "curl", "-s", f"http://127.0.0.1:{PORT}/")
        assert curl.stdout == "ok", curl.stderr
        server.wait(timeout=10)
        with socket_handle(own_cgroup, "event == CONNECT and remotePort == 443", SNIFF):
            qtbot.waitUntil(lambda: bool(_seen(model, Layer.REFLECT, Event.REFLECT_OPEN, os.getpid(),
                                               lambda r: r.handle.layer == Layer.SOCKET)), timeout=10000)
        qtbot.waitUntil(lambda: bool(_seen(model, Layer.FLOW, Event.FLOW_ESTABLISHED, server.pid)), timeout=10000)

        connect, = _seen(model, Layer.SOCKET, Event.SOCKET_CONNECT, curl_pid)
        assert (connect.flow.remote_port, connect.flow.protocol) == (PORT, 6)
        # The server was listening long before the service looked its name up (curl may be gone by then).
        listen, = _seen(model, Layer.SOCKET, Event.SOCKET_LISTEN, server.pid)
        assert listen.process == "tcp-server" and listen.flow.local_port == PORT
        assert connect.flow.remote == 0xFFFF7F000001
        established, = _seen(model, Layer.FLOW, Event.FLOW_ESTABLISHED, curl_pid)
        assert (established.flow.remote_port, established.flow.outbound) == (PORT, True)
        accepted, = _seen(model, Layer.FLOW, Event.FLOW_ESTABLISHED, server.pid)
        assert (accepted.flow.local_port, accepted.flow.remote_port) == (PORT, established.flow.local_port)
        opened = _seen(model, Layer.REFLECT, Event.REFLECT_OPEN, os.getpid())[-1]
        assert (opened.handle.priority, Flag(opened.handle.flags)) == (0, SNIFF)
        assert opened.handle.filter == "event = CONNECT and remotePort = 443"
        row = model.records.index(established)
        assert model.index(row, 3).data() == f"{established.process or '?'} ({curl_pid})"
        assert model.index(row, 6).data() == f"127.0.0.1:{PORT}"
        assert model.index(model.records.index(opened), 7).data() == \
            "SOCKET, priority 0, SNIFF|RECV_ONLY: event = CONNECT and remotePort = 443"

        # The packets of the connection, and of one more the flow filter leaves out.
        qtbot.waitUntil(lambda: window.count >= 6, timeout=10000)
        other = start_in(namespace, own_cgroup, sys.executable, "-c", SERVER, "127.0.0.1", str(OTHER_PORT))
        assert other.stdout.readline().strip() == "listening"
        assert run_in(namespace, own_cgroup, "curl", "-s", f"http://127.0.0.1:{OTHER_PORT}/")[1].stdout == "ok"
        other.wait(timeout=10)
        qtbot.waitUntil(lambda: window.count >= 12, timeout=10000)
        qtbot.wait(500)
        view.table.selectRow(row)
        view.flow_action.trigger()
        shown = window.display_filter.text()
        assert f"tcp.DstPort == {PORT}" in shown and f"tcp.SrcPort == {established.flow.local_port}" in shown
        table = window.table_model
        ports = {tuple(sorted((table.value("src_port", r), table.value("dst_port", r))))
                 for r in map(table.store_row, range(table.rowCount()))}
        assert 6 <= table.rowCount() < window.count and ports == {tuple(sorted((PORT, established.flow.local_port)))}
        window.charts_dock.hide()
        view.table.scrollTo(model.index(model.records.index(listen), 0), QAbstractItemView.ScrollHint.PositionAtTop)
        pictures = DOCS_IMAGES if os.environ.get("DIVERTGUI_SCREENSHOTS") == "docs" else tmp_path
        picture = pictures / "events.png"
        assert window.grab().save(str(picture), "PNG")
        check_picture(picture, (1200, 700))
        view.table.doubleClicked.emit(model.index(model.records.index(accepted), 0))
        assert table.process_pid == server.pid

        view.start_button.click()
        qtbot.waitUntil(lambda: not view.capturing, timeout=10000)
        records = list(model.records)
        path = tmp_path / "events.pcapng"
        assert window.files.save_capture(str(path)) == window.count
        window.files.open_capture(str(path))
        qtbot.waitUntil(lambda: model.generation > 0 and len(model.records) == len(records), timeout=10000)
        assert model.records == records
    finally:
        assert bench.close(), "the service did not stop"
