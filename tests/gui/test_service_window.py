"""The window as a client of a capture service it starts itself: it captures,
holds, edits and forwards through it; when the service dies the window says
so and keeps every row; Reconnect starts a new one (a unix: service, someone
else's, it connects to again); a user who may not run the capture program
gets one sentence and the demo network."""

import gc
import os
import signal
import subprocess
import sys

import pytest

from divertgui.app import Workbench, live_problem, self_test
from divertgui.engine.session import demo_fallback_reason
from divertgui.engine.store_record import Verdict
from divertgui.service.client import not_allowed_sentence
from divertgui.views.capture_options import CaptureOptions


@pytest.fixture
def served(qtbot):
    bench = Workbench(CaptureOptions(source="demo", rate=400.0), "local")
    qtbot.addWidget(bench.window)
    bench.window.show()
    yield bench
    bench.close()


def test_a_built_window_leaves_what_lives_as_long_as_it_out_of_full_collections(served):
    # Walking those objects at each full collection stalled the event loop for hundreds of ms.
    assert gc.get_freeze_count() > 10_000


def test_the_window_holds_edits_and_forwards_through_its_own_service(served, qtbot):
    qtbot.waitUntil(lambda: served.hello is not None, timeout=20000)
    assert served.hello["pid"] != os.getpid()
    passed, summary = self_test(served)
    assert passed, summary


def test_when_the_service_dies_the_window_says_so_keeps_its_rows_and_reconnects(served, qtbot):
    window = served.window
    qtbot.waitUntil(lambda: served.hello is not None, timeout=20000)
    window.start_capture()
    qtbot.waitUntil(lambda: window.count >= 40, timeout=10000)
    window.intercept.filter.set_text("tcp")
    window.intercept.filter.submit()
    qtbot.waitUntil(lambda: window.queue_model.rowCount() > 0, timeout=10000)
    os.kill(served.hello["pid"], signal.SIGKILL)
    qtbot.waitUntil(lambda: served.bridge.lost, timeout=10000)
    kept = len(served.store)
    rows = [served.store.raw(row) for row in range(kept)]
    assert window.error_banner.isVisible()
    assert "the service closed the connection" in window.error_banner.label.text()
    assert "Reconnect" in window.error_banner.label.text()
    qtbot.wait(300)
    assert len(served.store) == kept and [served.store.raw(row) for row in range(kept)] == rows
    assert (served.store.column("verdict") == Verdict.HELD).sum() >= 1

    served.reconnect()
    qtbot.waitUntil(lambda: served.hello is not None and not served.bridge.lost, timeout=20000)
    window.intercept.filter.set_text("false")
    window.intercept.filter.submit()
    window.start_capture()
    qtbot.waitUntil(lambda: window.count >= kept + 40, timeout=10000)
    assert [served.store.raw(row) for row in range(kept)] == rows


def test_a_user_who_may_not_run_the_capture_program_gets_one_sentence_and_the_demo(qtbot, tmp_path):
    program = tmp_path / "divert"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o640)          # as /opt/divertgui/divert is to someone outside the group divertgui
    bench = Workbench(CaptureOptions(source="demo", rate=400.0), "local", command=[str(program), "serve"])
    qtbot.addWidget(bench.window)
    try:
        assert bench.unavailable == not_allowed_sentence(str(program))
        assert live_problem(bench) == bench.unavailable
        assert "usermod -a -G divertgui" in bench.unavailable
        bench.window.show_notice(demo_fallback_reason(bench.unavailable))
        bench.window.start_capture()
        qtbot.waitUntil(lambda: bench.window.count >= 20, timeout=10000)
    finally:
        assert bench.close()


def test_lost_unix_services_are_each_named_and_connected_to_again_not_started(qtbot, tmp_path):
    path = str(tmp_path / "divert.sock")
    service = subprocess.Popen([sys.executable, "-m", "divertgui.cli", "serve", "--listen", path],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        qtbot.waitUntil(lambda: os.path.exists(path) or service.poll() is not None, timeout=20000)
        bench = Workbench(CaptureOptions(source="demo", rate=400.0), [f"unix:{path}", f"unix:{path}"])
        qtbot.addWidget(bench.window)
        qtbot.waitUntil(lambda: len(bench.hosts.links) == 2 and all(link.hello for link in bench.hosts.links),
                        timeout=20000)
        service.kill()
        banner = bench.window.error_banner.label
        # Both hosts lost at once: the banner names each (rich text).
        qtbot.waitUntil(lambda: banner.text().count("the service closed the connection") == 2, timeout=10000)
        assert f"unix:{path}: the service closed" in banner.text()
        assert f"unix:{path} (2): the service closed" in banner.text()
        assert "File &gt; Reconnect connects to it again once its service is back" in banner.text()
        bench.close()
    finally:
        service.kill()
        service.wait(10)
