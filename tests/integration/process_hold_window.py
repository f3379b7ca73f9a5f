"""The window with two capture services whose hosts each run a process of the
same pid, in a process of its own, for tests/integration/test_service_ssh_pids.py:

    python -m tests.integration.process_hold_window PORT TARGET TARGET

It captures UDP to PORT on both hosts and prints "ready"; after a line on its
input (one datagram sent from each host) it prints the Processes view's rows
as JSON, holds the process of the second host from that view and prints
"holding"; then, for each line (one more datagram from each host), "held" once
a packet of the second host is held, else "not yet"; after "held", one JSON
line: each row's host and verdict.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtWidgets import QApplication  # noqa: E402

from divertgui.app import Workbench, wait_until  # noqa: E402
from divertgui.engine.store_record import Verdict  # noqa: E402
from divertgui.views.capture_options import CaptureOptions  # noqa: E402


def say(value) -> None:
    print(value if isinstance(value, str) else json.dumps(value), flush=True)


def main(port: int, targets: list[str]) -> dict:
    QApplication.instance() or QApplication(["divertgui"])
    bench = Workbench(CaptureOptions(source="live"), targets)
    window, store = bench.window, bench.store
    links = bench.hosts.links
    if not wait_until(lambda: all(link.hello for link in links), 60):
        return {"failed": "not every host said hello", "errors": window.errors}
    window.capture_filter.set_text(f"udp.DstPort == {port}")
    window.start_capture()
    if not wait_until(lambda: len(bench.hosts.running()) == len(links), 20):
        return {"failed": "not every host captures", "errors": window.errors}
    say("ready")
    sys.stdin.readline()
    wait_until(lambda: window.count >= 2, 30)
    view = window.processes
    view.refresh()
    totals = view.totals
    say({"processes": [[store.hosts.name(int(host)), int(pid), name]
                       for host, pid, name in zip(totals.hosts, totals.pids, totals.names)],
         "errors": window.errors})
    second = links[1].index
    pid = next(int(pid) for host, pid in zip(totals.hosts, totals.pids) if int(host) == second)
    view.select_process(pid, second)
    view.hold_action.trigger()
    say("holding")
    # The hold reaches the second host's service some time after this: each line is one more
    # datagram from each host, answered "held" once a packet of the second host is held.
    expected = 2
    for _ in sys.stdin:
        expected += 2
        wait_until(lambda: window.count >= expected, 30)
        held = any(store.verdict(row) == Verdict.HELD and store.value("host", row) == second
                   for row in range(window.count))
        say("held" if held else "not yet")
        if held:
            break
    rows = [[store.host(row), Verdict(store.verdict(row)).name] for row in range(window.count)]
    window.post("forward_all")
    bench.close()
    return {"rows": rows, "errors": window.errors}


if __name__ == "__main__":
    say(main(int(sys.argv[1]), sys.argv[2:]))
