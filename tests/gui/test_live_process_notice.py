"""A live capture whose packets may lack their process says why above the packet list,
while it runs, and a capture that has its record of socket creators says nothing."""

import pytest
from PySide6.QtCore import Qt

from tests.gui.conftest import start_live_capture
from tests.gui.test_live_hold_edit import namespace  # noqa: F401  (the fixture)

pytestmark = pytest.mark.netns

MISSING = "divertgui-no-such-cgroup"


def test_a_cgroup_that_does_not_exist_is_named_in_a_notice_until_a_capture_has_its_record(qtbot, namespace,
                                                                                          capture_cgroup):
    from divertgui.app import Workbench
    from divertgui.views.capture_options import CaptureOptions
    with namespace.entered():
        bench = Workbench(CaptureOptions(source="live", cgroup=MISSING), None)
    window = bench.window
    qtbot.addWidget(window)
    window.show()
    banner = window.notice_banner
    try:
        start_live_capture(qtbot, window, "udp", "false")
        qtbot.waitUntil(banner.isVisible, timeout=5000)
        text = banner.label.text()
        assert "show no process" in text and f"there is no cgroup {MISSING} under " in text, text
        window.stop_capture()
        qtbot.waitUntil(lambda: not window.running, timeout=5000)
        window.options.cgroup = capture_cgroup
        window.start_capture()
        qtbot.waitUntil(lambda: window.running, timeout=10000)
        qtbot.waitUntil(lambda: not banner.isVisible(), timeout=5000)
        assert window.source_name == "live" and window.state_notice == ""
    finally:
        assert bench.close(), "the session thread did not stop"


def test_with_two_hosts_the_notice_names_each_host_it_comes_from(qtbot, namespace):
    from divertgui.app import Workbench
    from divertgui.views.capture_options import CaptureOptions
    from divertgui.views.connection import CONNECTED
    with namespace.entered():
        bench = Workbench(CaptureOptions(source="live", cgroup=MISSING), ["local", "local"])
    window = bench.window
    qtbot.addWidget(window)
    window.show()
    links = bench.hosts.links
    try:
        qtbot.waitUntil(lambda: all(link.state == CONNECTED for link in links), timeout=20000)
        window.capture_filter.set_text("udp")
        window.start_capture()
        qtbot.waitUntil(lambda: len(bench.hosts.running()) == 2, timeout=10000)
        qtbot.waitUntil(lambda: window.notice_banner.label.text().count(f"there is no cgroup {MISSING}") == 2,
                        timeout=5000)
        text = window.notice_banner.label.text()
        for link in links:
            assert f"{link.host}: Packets of programs" in text, text
    finally:
        assert bench.close()
