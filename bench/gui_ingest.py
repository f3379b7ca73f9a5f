"""Demo traffic through the real Session, its thread, the models and the main window.

Prints, each beside a baseline measured in this same run:
- the GUI event loop's lateness (p50, p99 of a 10 ms timer) while the demo
  source sends RATE packets/s for SECONDS, against the same timer with the
  window idle;
- the capture store's memory per packet beyond the packet bytes;
- the time to apply display filters over 1,000,000 stored packets, against
  calling the compiled filter on every row (timed on a sample, scaled).
Targets: every packet asked for stored (>= 95 % of RATE), p99 < 100 ms,
<= 64 bytes per packet, < 2 s. Summary last.

    QT_QPA_PLATFORM=offscreen python bench/gui_ingest.py [--seconds 20] [--rate 50000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
from PySide6.QtCore import QCoreApplication, QEventLoop, Qt, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from divertgui.app import Workbench  # noqa: E402
from divertgui.engine.address import Flag, Layer  # noqa: E402
from divertgui.engine.backends.demo import DemoBackend  # noqa: E402
from divertgui.engine.filter import compile_filter  # noqa: E402
from divertgui.engine.display_index import DisplayIndex  # noqa: E402
from divertgui.engine.store import CaptureStore, Verdict  # noqa: E402
from divertgui.views.capture_options import CaptureOptions  # noqa: E402

TICK_MS = 10
DISPLAY_FILTERS = (
    "tcp.DstPort == 80",
    "udp.DstPort == 53 or icmp or icmpv6",
    "ip.SrcAddr == 10.0.0.2 and tcp.PayloadLength > 0",
    "ipv6.DstAddr == 2001:db8:10::10 or tcp.Payload32[0] == 0x47455420",
    "outbound and (tcp ? tcp.Syn : udp.Length > 100)",
)


def tick_marks(seconds: float, mark=time.perf_counter) -> list:
    """`mark()` at each tick of a 10 ms timer while the event loop runs for `seconds`."""
    marks: list = []
    timer = QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)
    timer.timeout.connect(lambda: marks.append(mark()))
    timer.start(TICK_MS)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 20)
        time.sleep(0.001)
    timer.stop()
    return marks


def lateness(seconds: float) -> np.ndarray:
    """How late each tick of a 10 ms timer fired, in ms, while the event loop runs for `seconds`."""
    gaps = np.diff(np.asarray(tick_marks(seconds))) * 1000.0
    return np.clip(gaps - TICK_MS, 0, None)


def percentiles(late: np.ndarray) -> tuple[float, float]:
    if not len(late):
        return float("inf"), float("inf")
    return float(np.percentile(late, 50)), float(np.percentile(late, 99))


def run_gui(seconds: float, rate: float) -> dict:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    bench = Workbench(CaptureOptions(source="demo", rate=rate))
    window = bench.window
    window.resize(1400, 900)
    window.show()
    idle = lateness(min(3.0, seconds / 4))
    started = time.perf_counter()
    window.start_capture()
    busy = lateness(seconds)
    elapsed = time.perf_counter() - started
    stored = len(bench.store)
    overhead = bench.store.overhead_bytes() / max(stored, 1)
    window.stop_capture()
    if not bench.close():
        raise SystemExit("the session thread did not stop")
    app.processEvents()
    return {"idle": percentiles(idle), "busy": percentiles(busy), "stored": stored,
            "achieved": stored / elapsed, "overhead": overhead, "errors": list(getattr(window, "errors", []))}


def demo_packets(count: int) -> list:
    clock = [10**10]

    def sleep(seconds: float) -> None:
        clock[0] += int(seconds * 1e9) + 1000

    backend = DemoBackend(seed=1, rate=20_000, clock=lambda: clock[0], sleep=sleep)
    backend.open(None, Layer.NETWORK, 0, Flag(0), {})
    packets = []
    while len(packets) < count:
        for captured in backend.recv_batch(255, 0.01):
            backend.verdict(captured.ticket, captured.raw)
            packets.append((captured.raw, captured.address))
    return packets[:count]


def run_display_filters(total: int) -> dict:
    sample = demo_packets(100_000)
    raws, addresses = [p[0] for p in sample], [p[1] for p in sample]
    store = CaptureStore()
    started = time.perf_counter()
    while len(store) < total:
        take = min(len(raws), total - len(store))
        store.append_batch(raws[:take], addresses[:take], Verdict.PASSED, time.time_ns())
    ingest = total / (time.perf_counter() - started)
    results = []
    for text in DISPLAY_FILTERS:
        started = time.perf_counter()
        index = DisplayIndex(store, text)
        index.update()
        indexed = time.perf_counter() - started
        compiled = compile_filter(text, Layer.NETWORK)
        rows = range(0, len(store), len(store) // 20_000)
        started = time.perf_counter()
        for row in rows:
            compiled.match(store.raw(row), store.address(row))
        per_row = (time.perf_counter() - started) / len(rows) * len(store)
        results.append((text, len(index), indexed, per_row))
    return {"ingest": ingest, "overhead": store.overhead_bytes() / len(store),
            "packet_bytes": store.bytes_stored / len(store), "filters": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=50_000.0)
    parser.add_argument("--packets", type=int, default=1_000_000, help="stored packets for the display filters")
    args = parser.parse_args()

    gui = run_gui(args.seconds, args.rate)
    idle50, idle99 = gui["idle"]
    busy50, busy99 = gui["busy"]
    print(f"event loop lateness, idle window:         p50 {idle50:6.2f} ms  p99 {idle99:6.2f} ms")
    print(f"event loop lateness, demo at {args.rate:,.0f}/s:  p50 {busy50:6.2f} ms  p99 {busy99:6.2f} ms"
          f"  (p99 {busy99 / max(idle99, 0.01):.1f}x idle)")
    print(f"packets stored: {gui['stored']:,} in {args.seconds:.0f} s = {gui['achieved']:,.0f}/s "
          f"({gui['achieved'] / args.rate:.0%} of the rate asked)")
    if gui["errors"]:
        print(f"errors shown by the window: {gui['errors']}")

    display = run_display_filters(args.packets)
    print(f"store ingest: {display['ingest']:,.0f} packets/s; "
          f"{display['overhead']:.1f} bytes per packet beyond {display['packet_bytes']:.0f} bytes of packet")
    worst = 0.0
    for text, matched, indexed, per_row in display["filters"]:
        worst = max(worst, indexed)
        print(f"display filter {text!r}: {matched:,} of {args.packets:,} rows in {indexed:.2f} s; "
              f"matching every row would take {per_row:.1f} s ({per_row / indexed:.0f}x)")

    kept_up = gui["achieved"] >= 0.95 * args.rate
    ok = kept_up and busy99 < 100 and display["overhead"] <= 64 and worst < 2
    print(f"summary: {gui['achieved']:,.0f} of {args.rate:,.0f} packets/s stored (target >= 95 %), "
          f"GUI lateness p99 {busy99:.1f} ms (target < 100 ms), "
          f"{display['overhead']:.1f} bytes/packet beyond the packet bytes (target <= 64), "
          f"slowest display filter over {args.packets:,} packets {worst:.2f} s (target < 2 s): "
          f"{'all targets met' if ok else 'TARGETS MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
