"""Passthru throughput: a 64-byte UDP flood (udp_flood.py: sendmmsg/recvmmsg,
fast enough that the diverter sets the pace) between two network namespaces
joined by a veth pair, side by side in one run:

  (a) no diversion
  (b) the NetfilterQueue C binding doing the same passthru (NFQUEUE rule + accept)
  (ours) `divert passthru` on the receiving side
  (ours2) `divert passthru --workers 2`: two processes, one queue each
  (c) pydivert 4's Linux (eBPF) backend doing the same passthru
  (d) `divert passthru` open on a filter the flood does not match
  (dbpf) the same with a filter the kernel tests with the bpf match

lost = sent - received; bypassed = packets that reached the queue rule but
never user space (fail-open). cpu/packet: the CPU time (user + system) the
diverting processes used during the flood, per packet sent, and that of the
whole path (sender and receiver, with the kernel's work they cause, plus the
diverter): on a shared, noisy machine it moves far less than pps, and when
the cores are the limit, pps goes as its inverse. Targets: (ours2) >= 1.5x
(b) and >= 0.7x (a); 0 lost and 0 bypassed through our handles (the sender's
window keeps the flood below capacity); (d) >= 0.95x (a). Summary last,
with the load average (uptime) before and after.

    python bench/passthru.py [--seconds S] [--rounds R] [--only a,b,...] [--profile]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from udp_flood import FLOOD_PORT, OTHER_PORT, REPO, Pair, flood, load_average, sh, wait_line

NFQ_NUMBER = 99
# As long as a Divert handle's queue (its default QUEUE_LENGTH), which the flood's window stays below.
QUEUE_LENGTH = 4096
WINDOW = 3072


# -- the diverters -------------------------------------------------------------------

class NoDiversion:
    name = "(a) no diversion"

    def __init__(self, pair):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def counters(self) -> dict:
        return {"bypassed": 0}


class DivertPassthru:
    def __init__(self, pair: Pair, filter_text: str, name: str, profile: str | None = None, workers: int = 1,
                 options: tuple[str, ...] = ()):
        self.pair, self.filter_text, self.name, self.profile = pair, filter_text, name, profile
        self.workers, self.options = workers, options
        self.output = ""

    def __enter__(self):
        command = [sys.executable]
        if self.profile:
            command += ["-m", "cProfile", "-o", self.profile]
        command += ["-m", "divertgui.cli", "passthru", self.filter_text, "--batch", "255",
                    "--workers", str(self.workers), *self.options]
        self.process = self.pair.popen(self.pair.receiver, command)
        wait_line(self.process, self.process.stderr, "Ctrl+C to stop")
        return self

    def __exit__(self, *exc):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        out, err = self.process.communicate(timeout=60)
        self.output = out + err

    def counters(self) -> dict:
        found = re.search(r"counters: (.*)", self.output)
        return {k: int(v) for k, v in (item.split("=") for item in found.group(1).split())} if found else {}


NFQ_SCRIPT = """
import sys
from netfilterqueue import NetfilterQueue
seen = 0
def accept(packet):
    global seen
    seen += 1
    packet.accept()
queue = NetfilterQueue()
queue.bind(%d, accept, max_len=%d)
import signal, os
def stop(*a):
    print(seen, flush=True)
    os._exit(0)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
queue.run()
"""


class NetfilterQueueBinding:
    name = "(b) NetfilterQueue C binding"

    def __init__(self, pair: Pair):
        self.pair = pair
        self.seen = 0

    def _rule(self, *args: str) -> str:
        return sh("ip", "netns", "exec", self.pair.receiver, "env", f"PYTHONPATH={REPO}", sys.executable,
                  str(REPO / "bench" / "nfqueue_rule.py"), *args)

    def __enter__(self):
        script = NFQ_SCRIPT % (NFQ_NUMBER, QUEUE_LENGTH)
        self.process = self.pair.popen(self.pair.receiver, [sys.executable, "-c", script])
        wait_line(self.process, self.process.stdout, "ready")
        self._rule("add", str(FLOOD_PORT), str(NFQ_NUMBER))
        return self

    def __exit__(self, *exc):
        self.hits = int(self._rule("hits").strip())
        self._rule("delete")
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=30)
        self.seen = int(out.strip().splitlines()[-1])

    def counters(self) -> dict:
        return {"diverted": self.seen, "bypassed": max(0, self.hits - self.seen)}


PYDIVERT_SCRIPT = """
import os, signal, sys
from pydivert.ebpf import EBPFDivert
handle = EBPFDivert("udp.DstPort == %d")
handle.open()
seen = 0
def stop(*a):
    handle.close()
    print(seen, flush=True)
    os._exit(0)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
while True:
    try:
        packet = handle.recv(timeout=0.2)  # bounded, so that SIGTERM is handled
    except TimeoutError:
        continue
    seen += 1
    handle.send(packet)
"""


class PydivertEbpf:
    name = "(c) pydivert 4 Linux (eBPF)"

    def __init__(self, pair: Pair):
        self.pair = pair
        self.seen = 0

    def __enter__(self):
        self.process = self.pair.popen(self.pair.receiver, [sys.executable, "-c", PYDIVERT_SCRIPT % FLOOD_PORT])
        wait_line(self.process, self.process.stdout, "ready")
        return self

    def __exit__(self, *exc):
        self.process.send_signal(signal.SIGTERM)
        try:
            out, err = self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate(timeout=10)
        # Whatever a killed handle left attached goes, so later runs see a clean namespace.
        subprocess.run(["ip", "netns", "exec", self.pair.receiver, sys.executable, "-c",
                        "from pydivert.ebpf import EBPFDivert; EBPFDivert.unregister()"],
                       capture_output=True, timeout=30)
        lines = out.strip().splitlines()
        self.seen = int(lines[-1]) if lines and lines[-1].isdigit() else 0

    def counters(self) -> dict:
        return {"diverted": self.seen, "bypassed": 0}


# -- the run ----------------------------------------------------------------------------

def cpu_ns(process: subprocess.Popen | None) -> int | None:
    """CPU time (user + system, every thread) the process and its descendants have used so far, in ns
    (clock-tick resolution). Workers are grandchildren: a fork server the process starts forks them."""
    if process is None:
        return None
    try:
        ticks = sum(_ticks(pid) for pid in _family(process.pid))
    except (OSError, ValueError, IndexError):
        return None
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def _family(pid: int) -> list[int]:
    """The process and all its descendants."""
    found, pending = [], [pid]
    while pending:
        pid = pending.pop()
        found.append(pid)
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                pending += [int(child) for child in f.read().split()]
    return found


def _ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        # Fields after the command name, which is in parentheses and may hold spaces.
        fields = f.read().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def measure(pair: Pair, diverter, seconds: float, window: int) -> dict:
    try:
        with diverter:
            # CPU used during the flood only: start-up and clean-up left out. Unlike
            # pps it hardly moves with what else the machine runs meanwhile.
            process = getattr(diverter, "process", None)
            before = cpu_ns(process)
            result = flood(pair, seconds, window)
            after = cpu_ns(process)
    except Exception as exc:  # a contender that cannot run here is reported, not fatal
        return {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"}
    if before is not None and after is not None and result["sent"]:
        result["cpu_us"] = (after - before) / 1000 / result["sent"]
    counters = diverter.counters()
    result["bypassed"] = counters.get("bypassed", 0)
    result["overflowed"] = counters.get("overflowed", 0)
    return result


def profile_passthru(pair: Pair, seconds: float, window: int) -> str:
    """py-spy samples of `divert passthru` during a flood: own time by function, and by module."""
    if shutil.which("py-spy") is None:
        return "  py-spy is not installed (pip install py-spy)"
    output = f"/tmp/divert-passthru-{os.getpid()}.spy"
    diverter = DivertPassthru(pair, f"udp.DstPort == {FLOOD_PORT}", "profiled")
    with diverter:
        spy = subprocess.Popen(["py-spy", "record", "--pid", str(diverter.process.pid), "--format", "raw",
                                "--rate", "250", "--nonblocking", "--output", output],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        flood(pair, seconds, window)
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=30)
    own: dict[str, int] = {}
    modules: dict[str, int] = {}
    total = 0
    try:
        with open(output) as f:
            for line in f:
                stack, _, samples = line.rstrip().rpartition(" ")
                frames = stack.split(";")
                if not samples.isdigit() or not frames or "wait" in frames[-1] or "select" in frames[-1]:
                    continue
                n = int(samples)
                total += n
                leaf = re.sub(r" \(.*/", " (", frames[-1])
                own[leaf] = own.get(leaf, 0) + n
                for frame in reversed(frames):
                    found = re.search(r"divertgui/engine/([\w/]+)\.py", frame)
                    if found:
                        modules[found.group(1)] = modules.get(found.group(1), 0) + n
                        break
        os.unlink(output)
    except OSError as exc:
        return f"  no samples: {exc}"
    if not total:
        return "  no busy samples"
    lines = [f"  {100 * n / total:5.1f}%  {name}" for name, n in sorted(own.items(), key=lambda x: -x[1])[:15]]
    lines.append("  by innermost engine module (busy samples):")
    lines += [f"  {100 * n / total:5.1f}%  {name}.py" for name, n in sorted(modules.items(), key=lambda x: -x[1])]
    return "\n".join(lines)


CONTENDERS = {
    "a": lambda pair: NoDiversion(pair),
    "b": lambda pair: NetfilterQueueBinding(pair),
    "ours": lambda pair: DivertPassthru(pair, f"udp.DstPort == {FLOOD_PORT}", "(ours) divert passthru"),
    "ours2": lambda pair: DivertPassthru(pair, f"udp.DstPort == {FLOOD_PORT}", "(ours2) divert passthru, 2 workers",
                                         workers=2),
    "ours0": lambda pair: DivertPassthru(pair, f"udp.DstPort == {FLOOD_PORT}",
                                         "(ours0) divert passthru, --gather 0", options=("--gather", "0")),
    "d": lambda pair: DivertPassthru(pair, f"udp.DstPort == {OTHER_PORT}", "(d) divert passthru, flood not matched"),
    # The same, with a filter nf_tables' own expressions cannot test: the kernel runs the bpf match.
    "dbpf": lambda pair: DivertPassthru(pair, f"udp.DstPort == {OTHER_PORT} or udp.SrcPort == 7",
                                        "(dbpf) flood not matched, bpf match"),
    # Last: a crashed eBPF handle may leave programs attached.
    "c": lambda pair: PydivertEbpf(pair),
}


def median_results(runs: dict[str, list[dict]]) -> dict[str, dict]:
    results = {}
    for key, rs in runs.items():
        good = [r for r in rs if "error" not in r]
        if not good:
            results[key] = rs[-1]
            continue
        pps = sorted(r["pps"] for r in good)
        results[key] = {"pps": pps[len(pps) // 2], "lost": sum(r["lost"] for r in good),
                        "bypassed": sum(r["bypassed"] for r in good), "sent": sum(r["sent"] for r in good),
                        "stalls": sum(r["stalls"] for r in good)}
        for figure in ("cpu_us", "flood_cpu_us"):
            cpus = sorted(r[figure] for r in good if figure in r)
            if cpus:
                results[key][figure] = cpus[len(cpus) // 2]
    return results


def cpu_text(r: dict) -> str:
    """CPU per packet: the diverter's, and the whole path's (sender, receiver and diverter)."""
    diverter = r.get("cpu_us", 0.0)
    text = f"  cpu/packet: diverter {diverter:.2f} us" if "cpu_us" in r else "  cpu/packet:"
    if "flood_cpu_us" in r:
        text += f", whole path {diverter + r['flood_cpu_us']:.2f} us"
    return text


def summary(results: dict[str, dict], names: dict[str, str]) -> list[str]:
    def ratio(x: str, y: str) -> float | None:
        if any(k not in results or "error" in results[k] for k in (x, y)) or not results[y]["pps"]:
            return None
        return results[x]["pps"] / results[y]["pps"]

    def target(text: str, value: float | None, wanted: float) -> str:
        if value is None:
            return f"  {text}: n/a, not measured"
        return f"  {text}: {value:.2f}x (target >= {wanted}x) {'met' if value >= wanted else 'NOT MET'}"

    def cpu_ratio(x: str, y: str) -> float | None:
        """What ratio x / y of pps the whole path's CPU per packet allows when the cores are the limit."""
        cpus = [results.get(k, {}).get("cpu_us", 0.0) + results.get(k, {}).get("flood_cpu_us", 0.0) for k in (x, y)]
        return cpus[1] / cpus[0] if all(cpus) and all("flood_cpu_us" in results.get(k, {}) for k in (x, y)) else None

    lines = ["by pps, side by side in this run:",
             target("ours, 2 workers vs (b) C binding", ratio("ours2", "b"), 1.5),
             target("ours, 2 workers vs (a) no diversion", ratio("ours2", "a"), 0.7),
             target("(d) flood not matched vs (a) no diversion", ratio("d", "a"), 0.95),
             "by whole-path CPU per packet (the pps ratio when the cores are the limit):",
             target("ours, 2 workers vs (b) C binding", cpu_ratio("ours2", "b"), 1.5),
             target("ours, 2 workers vs (a) no diversion", cpu_ratio("ours2", "a"), 0.7),
             target("(d) flood not matched vs (a) no diversion", cpu_ratio("d", "a"), 0.95),
             "loss:"]
    for key in ("ours", "ours2"):
        r = results.get(key, {})
        if "lost" in r:
            clean = r["lost"] == 0 and r["bypassed"] == 0
            lines.append(f"  {names[key]}: lost {r['lost']}, bypassed {r['bypassed']} of {r['sent']} "
                         f"(target 0 and 0) {'met' if clean else 'NOT MET'}")
    lines.append("others, by pps:")
    for text, x, y in (("ours, 1 worker vs (b) C binding", "ours", "b"),
                       ("ours, 2 workers vs 1 worker", "ours2", "ours"),
                       ("ours, 1 worker vs the same reading at once (--gather 0)", "ours", "ours0"),
                       ("ours, 1 worker vs (c) pydivert eBPF", "ours", "c")):
        value = ratio(x, y)
        lines.append(f"  {text}: " + ("n/a" if value is None else f"{value:.2f}x"))
    if "error" in results.get("c", {}):
        lines.append(f"  (c) cannot run here: {results['c']['error']}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="counted seconds of flood per measurement")
    parser.add_argument("--window", type=int, default=WINDOW, help="packets the sender keeps unacknowledged")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", metavar="KEYS", help="comma-separated subset of " + ",".join(CONTENDERS))
    parser.add_argument("--profile", action="store_true", help="also profile `divert passthru` (py-spy)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0 or shutil.which("ip") is None:
        print("bench/passthru.py needs root and ip (it creates network namespaces)", file=sys.stderr)
        return 1
    keys = [key for key in CONTENDERS if not args.only or key in args.only.split(",")]
    load_before = load_average()
    print(f"{load_before}; {os.cpu_count()} cores; {args.rounds} rounds of {args.seconds:g} s, window {args.window}")
    runs: dict[str, list[dict]] = {}
    names = {}
    with Pair() as pair:
        # Rounds interleave the contenders, so that a busy moment of the
        # machine does not fall on one of them only; medians are compared.
        for round_number in range(args.rounds):
            for key in keys:
                if runs.get(key) and "error" in runs[key][-1]:
                    continue
                diverter = CONTENDERS[key](pair)
                names[key] = diverter.name
                r = measure(pair, diverter, args.seconds, args.window)
                runs.setdefault(key, []).append(r)
                if "error" in r:
                    print(f"{diverter.name:<42} cannot run here: {r['error']}")
                else:
                    cpu = cpu_text(r)
                    print(f"round {round_number + 1}  {diverter.name:<42} {r['pps']:>9.0f} pps  sent {r['sent']:>7}  "
                          f"lost {r['lost']:>6}  bypassed {r['bypassed']:>6}  stalls {r['stalls']}{cpu}", flush=True)
        if args.profile:
            print("\nwhere `divert passthru` spends its time (py-spy samples, all threads):")
            print(profile_passthru(pair, args.seconds, args.window))

    results = median_results(runs)
    print(f"\nmedians over {args.rounds} rounds")
    for key, r in results.items():
        if "error" not in r:
            print(f"  {names[key]:<42} {r['pps']:>9.0f} pps  lost {r['lost']} of {r['sent']}, "
                  f"bypassed {r['bypassed']}{cpu_text(r)}")
    print(f"\nsummary ({load_before} before, {load_average()} after; {os.cpu_count()} cores)")
    print("\n".join(summary(results, names)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
