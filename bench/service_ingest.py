"""The window's intake through the capture service, on the demo stream.

Prints, in one run:
- packets/s the service alone produces at RATE for SECONDS (a client that
  only counts the rows it announces, no window);
- packets/s the window stores through the service, their ratio (target >= 0.95)
  and the window's event-loop lateness, p50 and p99 of a 10 ms timer
  (target p99 < 50 ms);
- the same with three services at RATE3 each feeding one window process
  (the window shows the first; a window holds one service at a time, so the
  other two fill stores of their own in that process).
Summary last.

    QT_QPA_PLATFORM=offscreen python bench/service_ingest.py [--seconds 10] [--rate 50000] [--rate3 15000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtWidgets import QApplication  # noqa: E402

from bench.gui_ingest import lateness, percentiles  # noqa: E402
from divertgui.app import Workbench, wait_until  # noqa: E402
from divertgui.engine.store import CaptureStore  # noqa: E402
from divertgui.service.client import ServiceClient  # noqa: E402
from divertgui.views.capture_options import CaptureOptions  # noqa: E402
from divertgui.views.connection import ServiceConnection  # noqa: E402


def service_alone(seconds: float, rate: float) -> float:
    """Rows/s a service announces with nothing but a counting client on the other end."""
    announced = []
    client = ServiceClient("local", CaptureStore(), lambda e: e.get("type") == "rows" and announced.append(e["count"]))
    client.start()
    client.post("start", source="demo", rate=rate)
    time.sleep(1.0)
    first = announced[-1] if announced else 0
    started = time.perf_counter()
    time.sleep(seconds)
    last = announced[-1] if announced else 0
    elapsed = time.perf_counter() - started
    client.close()
    return (last - first) / elapsed


def through_window(seconds: float, rate: float, services: int) -> dict:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    bench = Workbench(CaptureOptions(source="demo", rate=rate), "local")
    window = bench.window
    window.resize(1400, 900)
    window.show()
    others = [ServiceConnection("local", CaptureStore()) for _ in range(services - 1)]
    for other in others:
        other.start()
    wait_until(lambda: bench.hello is not None and all(o.hello for o in others), 20)
    idle = lateness(2.0)
    stores = [bench.store] + [o.store for o in others]
    window.start_capture()
    for other in others:
        other.post("start", source="demo", rate=rate)
    wait_until(lambda: all(len(s) for s in stores), 10)
    before = [len(s) for s in stores]
    started = time.perf_counter()
    busy = lateness(seconds)
    elapsed = time.perf_counter() - started
    stored = [(len(s) - b) / elapsed for s, b in zip(stores, before)]
    window.stop_capture()
    for other in others:
        other.shutdown()
    bench.close()
    app.processEvents()
    return {"idle": percentiles(idle), "busy": percentiles(busy), "stored": stored, "errors": list(window.errors)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=50_000.0)
    parser.add_argument("--rate3", type=float, default=15_000.0)
    args = parser.parse_args()

    alone = service_alone(args.seconds, args.rate)
    print(f"one service alone, demo at {args.rate:,.0f}/s: {alone:,.0f} packets/s produced")
    one = through_window(args.seconds, args.rate, 1)
    ratio = one["stored"][0] / max(alone, 1.0)
    print(f"one service, window stores {one['stored'][0]:,.0f} packets/s ({ratio:.2f} of the service alone); "
          f"event loop lateness p50 {one['busy'][0]:.1f} ms, p99 {one['busy'][1]:.1f} ms "
          f"(idle p99 {one['idle'][1]:.1f} ms)")
    three = through_window(args.seconds, args.rate3, 3)
    total = sum(three["stored"])
    print(f"three services at {args.rate3:,.0f}/s each: {', '.join(f'{r:,.0f}' for r in three['stored'])} "
          f"packets/s stored ({total / (3 * args.rate3):.2f} of {3 * args.rate3:,.0f}); "
          f"event loop lateness p50 {three['busy'][0]:.1f} ms, p99 {three['busy'][1]:.1f} ms")
    for errors in (one["errors"], three["errors"]):
        if errors:
            print(f"errors shown by the window: {errors}")
    ok = ratio >= 0.95 and one["busy"][1] < 50 and three["busy"][1] < 50
    print(f"summary: window/service ratio {ratio:.2f} (target >= 0.95), lateness p99 {one['busy'][1]:.1f} ms "
          f"with one service and {three['busy'][1]:.1f} ms with three (target < 50 ms): "
          f"{'all targets met' if ok else 'TARGETS MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
