"""The window's intake through the capture service, on the demo stream.

Prints, in one run, in interleaved rounds (medians in the summary, since on
a shared machine only figures taken together compare):
- packets/s the service alone produces at RATE (a client that only counts
  the rows it announces, no window), and the service's CPU per packet;
- packets/s the window stores through one service at RATE, their ratio to
  the service alone (target >= 0.95), and the window's event-loop lateness,
  p50 and p99 of a 10 ms timer (target p99 < 50 ms), beside the same timer's
  lateness in the idle window of that round;
- the same with three services at RATE3 each feeding one window (three
  hosts, `divertgui --connect local` three times: one store, a reader thread
  per service, the rows counted per host).
Beside each busy window a bare 10 ms sleep loop runs in a process of its
own: its lateness is the machine's at that moment, the baseline for the
window's. For the late ticks (> 40 ms) it also says how much of their time the GUI
thread spent running and how much waiting for a CPU (Linux's schedstat): the
part no code in the window can shorten, on a machine that others load.
Summary last.

    QT_QPA_PLATFORM=offscreen python bench/service_ingest.py [--seconds 6] [--rounds 3] [--rate 50000] [--rate3 15000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from bench.gui_ingest import TICK_MS, percentiles, tick_marks  # noqa: E402
from divertgui.app import Workbench, wait_until  # noqa: E402
from divertgui.engine.store import CaptureStore  # noqa: E402
from divertgui.service.client import ServiceClient  # noqa: E402
from divertgui.views.capture_options import CaptureOptions  # noqa: E402

LATE_MS = 40


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run_queue_ms() -> float:
    """Time this thread has spent runnable but waiting for a CPU, in ms (0 where Linux does not say)."""
    try:
        return int(Path(f"/proc/self/task/{threading.get_native_id()}/schedstat").read_text().split()[1]) / 1e6
    except (OSError, IndexError, ValueError):
        return 0.0


def lateness(seconds: float) -> dict:
    """How late each tick of a 10 ms timer fired while the event loop runs for `seconds`; for the
    late ticks, the GUI thread's time running and waiting for a CPU."""
    stamps = tick_marks(seconds, lambda: (time.perf_counter(), time.thread_time(), _run_queue_ms()))
    if len(stamps) < 2:
        return {"late": np.zeros(0), "late_ticks": 0, "running_ms": 0.0, "waiting_ms": 0.0, "late_ms": 0.0}
    marks = np.asarray(stamps)
    wall, running, waiting = (np.diff(marks[:, i]) for i in range(3))
    late = np.clip(wall * 1000.0 - TICK_MS, 0, None)
    over = late > LATE_MS
    return {"late": late, "late_ticks": int(over.sum()), "late_ms": float(wall[over].sum() * 1000),
            "running_ms": float(running[over].sum() * 1000), "waiting_ms": float(waiting[over].sum())}


# A bare 10 ms sleep loop in a process of its own: how late a thread that does nothing but wake
# up is on this machine at that moment, the baseline for the window's figures taken beside it.
_BARE_TIMER = """
import json, sys, time
end, late = time.perf_counter() + float(sys.argv[1]), []
while time.perf_counter() < end:
    started = time.perf_counter()
    time.sleep(0.01)
    late.append(max(0.0, (time.perf_counter() - started - 0.01) * 1000))
late.sort()
print(json.dumps([late[len(late) // 2], late[min(len(late) - 1, len(late) * 99 // 100)]]))
"""


def bare_timer(seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-I", "-c", _BARE_TIMER, str(seconds)], stdout=subprocess.PIPE, text=True)


def bare_lateness(timer: subprocess.Popen) -> tuple[float, float]:
    """(p50, p99) in ms of what bare_timer measured."""
    out, _ = timer.communicate()
    return tuple(json.loads(out))


def service_alone(seconds: float, rate: float) -> dict:
    """Rows/s a service announces with nothing but a counting client on the other end."""
    announced = []
    client = ServiceClient("local", CaptureStore(), lambda e: e.get("type") == "rows" and announced.append(e["count"]))
    client.start()
    client.post("start", source="demo", rate=rate)
    time.sleep(1.0)
    first, cpu = (announced[-1] if announced else 0), cpu_seconds(client.pid)
    started = time.perf_counter()
    time.sleep(seconds)
    last, cpu = (announced[-1] if announced else 0), cpu_seconds(client.pid) - cpu
    elapsed = time.perf_counter() - started
    client.close()
    return {"pps": (last - first) / elapsed, "us_per_packet": cpu / max(last - first, 1) * 1e6,
            "load": os.getloadavg()[0]}


def rows_per_host(store, hosts: list[int], start: int) -> list[int]:
    counts = np.bincount(store.column("host", start), minlength=max(hosts) + 1)
    return [int(counts[host]) for host in hosts]


def through_window(seconds: float, rate: float, services: int) -> dict:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    bench = Workbench(CaptureOptions(source="demo", rate=rate), ["local"] * services)
    window = bench.window
    window.resize(1400, 900)
    window.show()
    links = bench.hosts.links
    wait_until(lambda: all(link.hello for link in links), 20)
    idle = lateness(2.0)
    hosts = [link.index for link in links]
    pids = [link.client.pid for link in links]
    window.start_capture()
    wait_until(lambda: all(rows_per_host(bench.store, hosts, 0)), 10)
    before = len(bench.store)
    cpu_before = [cpu_seconds(pid) for pid in pids]
    window_cpu = time.process_time()
    started = time.perf_counter()
    beside = bare_timer(seconds)
    busy = lateness(seconds)
    elapsed = time.perf_counter() - started
    bare = bare_lateness(beside)
    window_cpu = time.process_time() - window_cpu
    added = rows_per_host(bench.store, hosts, before)
    service_cpu = sum(cpu_seconds(pid) for pid in pids) - sum(cpu_before)
    load = os.getloadavg()[0]
    window.stop_capture()
    bench.close()
    app.processEvents()
    return {"idle": percentiles(idle["late"]), "busy": percentiles(busy["late"]), "late": busy, "bare": bare,
            "stored": [a / elapsed for a in added], "window_us": window_cpu / max(sum(added), 1) * 1e6,
            "service_us": service_cpu / max(sum(added), 1) * 1e6, "load": load, "errors": list(window.errors)}


def describe_late(late: dict) -> str:
    if not late["late_ticks"]:
        return f"no tick later than {LATE_MS} ms"
    return (f"{late['late_ticks']} ticks later than {LATE_MS} ms: of their {late['late_ms']:.0f} ms the GUI thread "
            f"ran {late['running_ms']:.0f} ms and waited {late['waiting_ms']:.0f} ms for a CPU")


def print_window(round_number: int, what: str, stored: str, result: dict) -> None:
    print(f"round {round_number}  {what}: {stored}; lateness p50 {result['busy'][0]:.1f} ms, "
          f"p99 {result['busy'][1]:.1f} ms (idle window p99 {result['idle'][1]:.1f} ms); CPU per packet: window "
          f"{result['window_us']:.1f} us, {'service' if len(result['stored']) == 1 else 'services'} "
          f"{result['service_us']:.1f} us "
          f"(load average {result['load']:.1f})", flush=True)
    print(f"           {describe_late(result['late'])}; a bare timer beside it: p50 {result['bare'][0]:.1f} ms, "
          f"p99 {result['bare'][1]:.1f} ms", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds of each phase of a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=50_000.0)
    parser.add_argument("--rate3", type=float, default=15_000.0)
    args = parser.parse_args()

    alone, one, three = [], [], []
    for round_number in range(1, args.rounds + 1):
        a = service_alone(args.seconds, args.rate)
        alone.append(a)
        print(f"round {round_number}  service alone at {args.rate:,.0f}/s: {a['pps']:,.0f} packets/s produced, "
              f"{a['us_per_packet']:.1f} us CPU per packet (load average {a['load']:.1f})", flush=True)
        w = through_window(args.seconds, args.rate, 1)
        one.append(w)
        print_window(round_number, "one service", f"window stores {w['stored'][0]:,.0f} packets/s "
                     f"({w['stored'][0] / max(a['pps'], 1.0):.2f} of the service alone)", w)
        t = through_window(args.seconds, args.rate3, 3)
        three.append(t)
        print_window(round_number, f"three services at {args.rate3:,.0f}/s",
                     f"{', '.join(f'{r:,.0f}' for r in t['stored'])} packets/s stored "
                     f"({sum(t['stored']) / (3 * args.rate3):.2f} of {3 * args.rate3:,.0f})", t)
        for errors in (w["errors"], t["errors"]):
            if errors:
                print(f"           errors shown by the window: {errors}")

    def median(values):
        return statistics.median(values)

    produced = median([a["pps"] for a in alone])
    stored = median([w["stored"][0] for w in one])
    ratio = median([w["stored"][0] / max(a["pps"], 1.0) for w, a in zip(one, alone)])
    p50_one, p99_one = median([w["busy"][0] for w in one]), median([w["busy"][1] for w in one])
    p50_three, p99_three = median([t["busy"][0] for t in three]), median([t["busy"][1] for t in three])
    idle99 = median([r["idle"][1] for r in one + three])
    bare99 = median([r["bare"][1] for r in one + three])
    share3 = median([sum(t["stored"]) / (3 * args.rate3) for t in three])
    load = median([r["load"] for r in alone + one + three])
    print()
    print(f"service alone        {produced:,.0f} packets/s of {args.rate:,.0f} asked (median of {args.rounds})")
    print(f"window, one service  {stored:,.0f} packets/s stored, ratio {ratio:.2f}; lateness p50 {p50_one:.1f} ms, "
          f"p99 {p99_one:.1f} ms")
    print(f"window, three        {share3:.2f} of {3 * args.rate3:,.0f} packets/s stored; lateness p50 {p50_three:.1f} ms, "
          f"p99 {p99_three:.1f} ms")
    print(f"idle window          lateness p99 {idle99:.1f} ms; a bare timer beside the busy window p99 {bare99:.1f} ms; "
          f"load average {load:.1f} on {os.cpu_count()} CPUs")
    ok = ratio >= 0.95 and p99_one < 50 and p99_three < 50
    print(f"summary: window/service ratio {ratio:.2f} (target >= 0.95), lateness p99 {p99_one:.1f} ms with one "
          f"service and {p99_three:.1f} ms with three (target < 50 ms; idle window {idle99:.1f} ms, "
          f"bare timer {bare99:.1f} ms), "
          f"load average {load:.1f}: {'all targets met' if ok else 'TARGETS MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
