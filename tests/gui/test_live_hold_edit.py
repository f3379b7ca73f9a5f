"""Real diversion in a network namespace: a packet held in the workbench, edited
in its form and forwarded, reaches the receiving socket edited."""

import os
import socket

import pytest
from PySide6.QtCore import Qt

from tests.gui.conftest import start_live_capture
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


def live_bench_and_sockets(namespace, cgroup: str, target: str | None = None):
    """A workbench on live capture and a UDP receiver and sender, all made inside the
    namespace (the session thread, the capture service of `target` "local" and the
    sockets live where they are created)."""
    from divertgui.app import Workbench
    from divertgui.views.capture_options import CaptureOptions
    with namespace.entered():
        bench = Workbench(CaptureOptions(source="live", cgroup=cgroup), target)
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.bind(("127.0.0.1", 0))
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return bench, receiver, sender


def test_edited_held_packet_reaches_the_socket_edited(qtbot, namespace, capture_cgroup):
    bench, receiver, sender = live_bench_and_sockets(namespace, capture_cgroup)
    port = receiver.getsockname()[1]
    receiver.settimeout(5)
    window = bench.window
    qtbot.addWidget(window)
    try:
        start_live_capture(qtbot, window, f"udp.DstPort == {port}", f"udp.DstPort == {port}")
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


def test_after_opening_a_file_live_capture_runs_in_the_mode_chosen_and_holds(qtbot, namespace, tmp_path,
                                                                             capture_cgroup):
    from divertgui.engine import pcapng
    from divertgui.engine.address import Address
    from tests.gui.test_reopen_and_live_state import RECORDED_START_NS, udp_packet
    path = tmp_path / "earlier.pcapng"
    pcapng.write_capture(path, [(udp_packet(), Address(outbound=True), RECORDED_START_NS)])
    bench, receiver, sender = live_bench_and_sockets(namespace, capture_cgroup)
    port = receiver.getsockname()[1]
    window = bench.window
    qtbot.addWidget(window)
    try:
        window.mode.setCurrentText("divert")
        window.files.open_capture(str(path))
        qtbot.waitUntil(lambda: window.count == 1, timeout=5000)
        assert window.mode.currentText() == "divert"
        window.capture_filter.set_text(f"udp.DstPort == {port}")
        window.intercept.filter.set_text(f"udp.DstPort == {port}")
        window.intercept.filter.submit()
        window.start_capture()
        qtbot.waitUntil(lambda: window.running, timeout=10000)
        assert window.source_name == "live", window.errors
        assert window.status_line.labels["state"].text() == "● capturing (live, divert mode)"
        assert_held_then_forwarded(qtbot, window, sender, receiver, b"held because the mode is divert")
    finally:
        sender.close()
        receiver.close()
        assert bench.close(), "the session thread did not stop"


def assert_held_then_forwarded(qtbot, window, sender, receiver, data: bytes, also=None) -> None:
    """`data` sent to the receiver is held (and `also` holds), then Forward all delivers it."""
    sender.sendto(data, receiver.getsockname())
    qtbot.waitUntil(lambda: window.queue_model.rowCount() == 1, timeout=10000)
    if also is not None:
        qtbot.waitUntil(also, timeout=5000)
    window.intercept.forward_all()
    receiver.settimeout(5)
    assert receiver.recvfrom(65535)[0] == data


def assert_refused(qtbot, window, dialog, port: int, says: str) -> None:
    """Start with the options `dialog` holds: the service refuses them, saying `says`."""
    window.options = dialog.options()
    window.capture_filter.set_text(f"udp.DstPort == {port}")
    window.start_capture()
    qtbot.waitUntil(lambda: says in window.error_banner.label.text(), timeout=20000)
    assert not window.running


def test_the_workers_of_capture_options_reach_the_service_which_captures_over_them(qtbot, namespace,
                                                                                   capture_cgroup):
    from divertgui.views.capture_options import CaptureOptionsDialog
    bench, receiver, sender = live_bench_and_sockets(namespace, capture_cgroup, "local")
    port = receiver.getsockname()[1]
    receiver.settimeout(5)
    window = bench.window
    qtbot.addWidget(window)
    try:
        dialog = CaptureOptionsDialog(window.options, window)
        dialog.workers.setValue(9999)
        assert dialog.workers.value() == 256
        assert_refused(qtbot, window, dialog, port,
                       "start.workers must be &quot;auto&quot; or a whole number from 1 to")

        dialog = CaptureOptionsDialog(window.options, window)
        dialog.workers.setValue(2)
        window.options = dialog.options()
        assert window.options.workers == 2
        start_live_capture(qtbot, window, f"udp.DstPort == {port}", f"udp.DstPort == {port}")
        assert_held_then_forwarded(qtbot, window, sender, receiver, b"held by a worker",
                                   lambda: window.session_stats.get("workers") == 2)
    finally:
        sender.close()
        receiver.close()
        assert bench.close(), "the session thread did not stop"


def _creators_attached(cgroup: str) -> int:
    """The cgroup/sock_create programs attached to `cgroup` (a path under the cgroup v2 mount)."""
    from divertgui.engine.backends import bpf_syscall
    from divertgui.engine.backends.cgroups import cgroup_directory, open_cgroup
    fd = open_cgroup(cgroup_directory(cgroup))
    try:
        return len(bpf_syscall.query_cgroup(fd, bpf_syscall.ATTACH_INET_SOCK_CREATE))
    finally:
        os.close(fd)


def test_the_cgroup_of_capture_options_reaches_the_service_which_records_socket_creators_there(
        qtbot, namespace, capture_cgroup):
    from divertgui.views.capture_options import CaptureOptionsDialog
    bench, receiver, sender = live_bench_and_sockets(namespace, capture_cgroup, "local")
    port = receiver.getsockname()[1]
    window = bench.window
    qtbot.addWidget(window)
    try:
        dialog = CaptureOptionsDialog(window.options, window)
        assert dialog.cgroup.text() == capture_cgroup
        dialog.cgroup.setText(f"{capture_cgroup}/../..")
        assert_refused(qtbot, window, dialog, port, "start.cgroup must be a cgroup path under the cgroup v2 mount")

        dialog = CaptureOptionsDialog(window.options, window)
        dialog.cgroup.setText(capture_cgroup)
        window.options = dialog.options()
        start_live_capture(qtbot, window, f"udp.DstPort == {port}", "false")
        qtbot.waitUntil(lambda: _creators_attached(capture_cgroup) == 1, timeout=10000)
        window.stop_capture()
        qtbot.waitUntil(lambda: _creators_attached(capture_cgroup) == 0, timeout=10000)
    finally:
        sender.close()
        receiver.close()
        assert bench.close(), "the session thread did not stop"
