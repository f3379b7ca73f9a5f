"""Real diversion in a network namespace: a packet held in the workbench, edited
in its form and forwarded, reaches the receiving socket edited."""

import socket

import pytest
from PySide6.QtCore import Qt

from tests.integration.conftest import Namespace, require_prerequisites, run

pytestmark = pytest.mark.netns


@pytest.fixture
def namespace():
    require_prerequisites()
    name = f"dggui{__import__('os').getpid()}"
    run("ip", "netns", "add", name)
    ns = Namespace(name)
    try:
        ns.ip("link", "set", "lo", "up")
        yield ns
    finally:
        ns.remove()


def test_edited_held_packet_reaches_the_socket_edited(qtbot, namespace):
    from divertgui.app import Workbench
    from divertgui.views.capture_options import CaptureOptions
    with namespace.entered():
        # The session thread and the sockets are created here, so they live in the namespace.
        bench = Workbench(CaptureOptions(source="live"))
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.bind(("127.0.0.1", 0))
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    port = receiver.getsockname()[1]
    receiver.settimeout(5)
    window = bench.window
    qtbot.addWidget(window)
    try:
        window.capture_filter.set_text(f"udp.DstPort == {port}")
        window.intercept.filter.set_text(f"udp.DstPort == {port}")
        window.intercept.filter.submit()
        window.start_capture()
        qtbot.waitUntil(lambda: window.running, timeout=10000)
        assert window.source_name == "live", window.errors
        sender.sendto(b"original payload", ("127.0.0.1", port))
        qtbot.waitUntil(lambda: window.queue_model.rowCount() == 1, timeout=10000)
        panel = window.intercept
        qtbot.waitUntil(lambda: panel.current_id is not None)
        payload = panel.editor.form.field("payload", "bytes")
        payload.clear()
        qtbot.keyClicks(payload, "edited in the workbench")
        qtbot.mouseClick(panel.forward_button, Qt.MouseButton.LeftButton)
        data, _ = receiver.recvfrom(65535)
        assert data == b"edited in the workbench"
        qtbot.waitUntil(lambda: window.queue_model.rowCount() == 0, timeout=5000)
        row = window.table_model.store_row(0)
        qtbot.waitUntil(lambda: window.table_model.verdict_name(row) == "modified", timeout=5000)
    finally:
        sender.close()
        receiver.close()
        assert bench.close(), "the session thread did not stop"
