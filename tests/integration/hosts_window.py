"""The window with several capture services, in a process of its own, for
tests/integration/test_service_ssh_hosts.py:

    python -m tests.integration.hosts_window PORT TARGET...

It connects to every TARGET as `divertgui --connect TARGET ...` does,
captures UDP to PORT on each, prints "ready" once every host captures, then
reads a line with the number of datagrams sent from each host, waits for them
(30 s at most) and prints one JSON line: each row's Host column and payload.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtWidgets import QApplication  # noqa: E402

from divertgui.app import Workbench, wait_until  # noqa: E402
from divertgui.engine.packet import Packet  # noqa: E402
from divertgui.models.packet_table import HOST  # noqa: E402
from divertgui.views.capture_options import CaptureOptions  # noqa: E402


def main(port: int, targets: list[str]) -> dict:
    QApplication.instance() or QApplication(["divertgui"])
    bench = Workbench(CaptureOptions(source="live"), targets)
    window = bench.window
    links = bench.hosts.links
    report: dict = {"hosts": [link.host for link in links]}
    if not wait_until(lambda: all(link.hello for link in links), 60):
        return dict(report, failed="not every host said hello", errors=window.errors)
    window.capture_filter.set_text(f"udp.DstPort == {port}")
    window.start_capture()
    if not wait_until(lambda: len(bench.hosts.running()) == len(links), 20):
        return dict(report, failed="not every host captures", errors=window.errors)
    print("ready", flush=True)
    expected = int(sys.stdin.readline()) * len(links)
    wait_until(lambda: window.count >= expected, 30)
    model = window.table_model
    rows = [[model.cells(row).texts[HOST], Packet(bench.store.raw(model.store_row(row))).payload.decode()]
            for row in range(model.rowCount())]
    report.update(rows=rows, host_column_shown=not window.table.isColumnHidden(HOST), errors=window.errors)
    bench.close()
    return report


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), sys.argv[2:])), flush=True)
