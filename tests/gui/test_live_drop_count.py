"""Live capture in drop mode, in a network namespace: the packets its rule drops never reach
the list (a DROP handle receives nothing), and the status bar counts them while it runs."""

import pytest

from tests.gui.conftest import start_live_capture
from tests.gui.test_live_hold_edit import namespace  # noqa: F401 (a fixture)
from tests.integration.conftest import icmp_echo

pytestmark = pytest.mark.netns

PINGS = 6


def test_drop_mode_shows_what_its_rule_drops_while_it_runs(qtbot, namespace, capture_cgroup):  # noqa: F811
    from divertgui.app import Workbench
    from divertgui.views.capture_options import CaptureOptions
    with namespace.entered():
        bench = Workbench(CaptureOptions(source="live", cgroup=capture_cgroup))
    window = bench.window
    qtbot.addWidget(window)
    dropped = window.status_line.labels["dropped"]
    try:
        window.mode.setCurrentText("drop")
        start_live_capture(qtbot, window, "icmp", "false")
        assert window.status_line.labels["state"].text() == "● capturing (live, drop mode)"
        with namespace.entered():
            replies = icmp_echo("127.0.0.1", PINGS, timeout=0.2)
        qtbot.waitUntil(lambda: dropped.text() == f"Dropped {PINGS}", timeout=10000)
        assert window.running
        assert replies == 0
        assert window.count == 0
    finally:
        assert bench.close(), "the session thread did not stop"


def test_the_demo_network_in_drop_mode_counts_its_drops_as_a_live_capture_does(qtbot, workbench):
    window = workbench.window
    window.mode.setCurrentText("drop")
    window.capture_filter.set_text("udp")
    window.start_capture()
    qtbot.waitUntil(lambda: window.running, timeout=10000)
    dropped = window.status_line.labels["dropped"]
    qtbot.waitUntil(lambda: dropped.text() not in ("Dropped 0", ""), timeout=10000)
    assert window.count == 0
