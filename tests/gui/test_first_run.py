"""First run without the privilege to capture: the window says why, persistently, and runs the demo.

The window runs in a process of its own, in a network namespace of its own,
started without CAP_NET_ADMIN and CAP_NET_RAW (root's other capabilities are
irrelevant to diverting), so that live capture is really impossible there.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from divertgui.engine.session import demo_fallback_reason
from divertgui.engine import privileges

REPO = Path(__file__).resolve().parents[2]

REPORT = """
def report(window):
    banner = window.notice_banner
    top = lambda widget: widget.mapTo(window, widget.rect().topLeft()).y()
    return {"visible": banner.isVisible(), "text": banner.label.text(), "source": window.source_name,
            "running": window.running, "rows": window.count, "errors": window.errors,
            "above_the_packets": top(banner) < top(window.table)}
"""

# The start-up decision of `divertgui` with no arguments, as a double-click makes it.
START_AS_AFTER_A_DOUBLE_CLICK = REPORT + """
import json
from PySide6.QtWidgets import QApplication
from divertgui.app import _parse, open_workbench, wait_until
app = QApplication([])
bench = open_workbench(_parse([]))
window = bench.window
wait_until(lambda: window.count >= 20, 15)
wait_until(lambda: False, 0.5)  # a few more session events, which must not hide the notice
print(json.dumps(report(window)))
assert bench.close()
"""

# Live capture asked for explicitly: the session falls back and its state event carries the reason.
ASK_FOR_LIVE_CAPTURE = REPORT + """
import json
from PySide6.QtWidgets import QApplication, QToolButton
from divertgui.app import Workbench, wait_until
from divertgui.views.capture_options import CaptureOptions
app = QApplication([])
bench = Workbench(CaptureOptions(source="live"))
window = bench.window
window.show()
window.start_capture()
wait_until(lambda: window.count >= 20, 15)
reports = [report(window)]
window.notice_banner.findChild(QToolButton).click()
window.set_paused(True)
wait_until(lambda: window.paused, 5)
reports.append(report(window))
print(json.dumps(reports))
assert bench.close()
"""


def _run_without_capture_privilege(script: str, tmp_path) -> str:
    missing = [tool for tool in ("unshare", "setpriv") if shutil.which(tool) is None]
    if missing or not sys.platform.startswith("linux") or os.geteuid() != 0:
        reason = f"needs Linux, root and {', '.join(missing) or 'unshare and setpriv'} to start a window " \
                 f"without CAP_NET_ADMIN in a namespace of its own"
        if os.environ.get("CI") == "true":
            pytest.fail(f"missing prerequisite in CI: {reason}")
        pytest.skip(reason)
    env = dict(os.environ, PYTHONPATH=str(REPO), QT_QPA_PLATFORM="offscreen", XDG_CONFIG_HOME=str(tmp_path))
    done = subprocess.run(["unshare", "--net", "setpriv", "--inh-caps=-all", "--bounding-set=-net_admin,-net_raw",
                           sys.executable, "-c", script], capture_output=True, text=True, timeout=90, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def _expected_notice() -> str:
    return demo_fallback_reason(privileges.privilege_sentence(["CAP_NET_ADMIN", "CAP_NET_RAW"]))


def test_a_first_start_without_privilege_explains_why_and_runs_the_demo(tmp_path):
    state = json.loads(_run_without_capture_privilege(START_AS_AFTER_A_DOUBLE_CLICK, tmp_path))
    assert state["visible"] and state["above_the_packets"]
    assert state["text"] == _expected_notice()
    assert "run it as root" in state["text"] and "packaging/install-linux.sh" in state["text"]
    assert state["running"] and state["source"] == "demo" and state["rows"] >= 20
    assert state["errors"] == []


def test_live_capture_that_falls_back_says_why_until_the_user_closes_it(tmp_path):
    falling_back, after_close = json.loads(_run_without_capture_privilege(ASK_FOR_LIVE_CAPTURE, tmp_path))
    assert falling_back["visible"] and falling_back["running"] and falling_back["source"] == "demo"
    assert falling_back["text"] == _expected_notice()
    assert falling_back["errors"] == []
    # The next state event (pause) repeats the reason; a closed notice stays closed.
    assert not after_close["visible"] and after_close["running"]
