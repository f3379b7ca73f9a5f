"""The window, on real TCP in a network namespace: curl's request held, its path made longer
in the editor's form and forwarded; curl gets the page of the edited path."""

import shutil

import pytest
from PySide6.QtCore import Qt

from tests.gui.conftest import start_live_capture
from tests.integration.conftest import require
from tests.integration.test_edit_tcp_netns import ASKED, FILES, PORT, HttpServer, curl

pytestmark = pytest.mark.netns

EDITED = "/longer-path-than-asked"


def test_a_request_edited_longer_in_the_window_completes(qtbot, netns, tmp_path, capture_cgroup):
    require(None if shutil.which("curl") else "curl is not installed (Debian package curl)")
    from divertgui.app import Workbench
    from divertgui.views.capture_options import CaptureOptions
    root = tmp_path / "www"
    root.mkdir()
    server = HttpServer(netns, "127.0.0.1", root)
    with netns.entered():
        bench = Workbench(CaptureOptions(source="live", cgroup=capture_cgroup))
    window = bench.window
    qtbot.addWidget(window)
    try:
        start_live_capture(qtbot, window, f"tcp.DstPort == {PORT} or tcp.SrcPort == {PORT}",
                           f"tcp.DstPort == {PORT} and tcp.PayloadLength > 0")
        body = tmp_path / "body"
        client = curl(netns, "127.0.0.1", body)
        qtbot.waitUntil(lambda: window.queue_model.rowCount() >= 1, timeout=10000)
        panel = window.intercept
        qtbot.waitUntil(lambda: panel.current_id is not None)
        payload = panel.editor.form.field("payload", "bytes")
        assert ASKED in payload.text()
        payload.setText(payload.text().replace(ASKED, EDITED, 1))
        qtbot.mouseClick(panel.forward_button, Qt.MouseButton.LeftButton)
        _out, err = client.communicate(timeout=30)
        assert client.returncode == 0, err
        assert body.read_bytes() == FILES[EDITED]
        assert f"GET {EDITED} HTTP/1.1" in server.requests()
        qtbot.waitUntil(lambda: window.queue_model.rowCount() == 0, timeout=5000)
    finally:
        server.stop()
        assert bench.close(), "the session did not stop"
