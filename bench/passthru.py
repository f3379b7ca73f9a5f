"""Passthru throughput: a 64-byte UDP flood between two processes in two
network namespaces joined by a veth pair (created here, removed at the end),
side by side in one run:

  (a) no diversion
  (ours) `divert passthru` on the receiving side
  (ours, 2 workers) `divert passthru --workers 2`: two processes, one queue each
  (b) the NetfilterQueue C binding doing the same passthru (NFQUEUE rule + accept)
  (c) pydivert 4's Linux (eBPF) backend doing the same passthru
  (d) `divert passthru` open on a filter the flood does not match

The sender keeps at most --window packets unacknowledged (the receiver acks
every 64 over a separate UDP port that no filter here matches), so a diverter
that keeps up loses nothing, and pps is the rate of the slowest stage. lost =
sent - received; bypassed = packets that reached the queue rule but never
user space (fail-open). diverter cpu = the CPU time (user + system) the
diverting process used during the flood, per packet sent: on a shared,
noisy machine it moves far less than pps. The sender sends from
SENDER_FLOWS addresses in turn, so that netfilter's queue balancing (a hash
of the addresses) has flows to spread over the workers. Targets: ours >= 1.0x
(b) with zero loss and bypass; ours with 2 workers >= 1.5x (b) and >= 0.7x
(a); (d) >= 0.95x (a). Summary last.

    python bench/passthru.py [--count N] [--rounds R] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLOOD_PORT, CONTROL_PORT, OTHER_PORT = 47001, 47002, 47003
SENDER_ADDR, RECEIVER_ADDR = "10.99.0.1", "10.99.0.2"
SENDER_FLOWS = [SENDER_ADDR] + [f"10.99.0.{11 + i}" for i in range(7)]
PAYLOAD = 64 - 20 - 8  # a 64-byte IPv4 packet
ACK_EVERY = 64
RUN_SECONDS = 20.0
NFQ_NUMBER = 99


# -- the two flood processes -------------------------------------------------------

def run_receiver(expected: int) -> None:
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    flood.bind((RECEIVER_ADDR, FLOOD_PORT))
    control = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    control.bind((RECEIVER_ADDR, CONTROL_PORT))
    print("ready", flush=True)
    flood.settimeout(RUN_SECONDS)
    buffer = bytearray(2048)
    received = 0
    sender = (SENDER_ADDR, CONTROL_PORT)
    deadline = time.monotonic() + RUN_SECONDS
    try:
        while received < expected and time.monotonic() < deadline:
            flood.recv_into(buffer)
            received += 1
            if received % ACK_EVERY == 0:
                control.sendto(struct.pack("!Q", received), sender)
    except socket.timeout:
        pass
    # Stragglers, then the final count.
    flood.settimeout(0.5)
    try:
        while True:
            flood.recv_into(buffer)
            received += 1
    except socket.timeout:
        pass
    control.sendto(struct.pack("!Q", received) + b"END", sender)
    print(json.dumps({"received": received}), flush=True)


def run_sender(count: int, window: int) -> None:
    floods = []
    for address in SENDER_FLOWS:
        flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        flood.bind((address, 0))
        floods.append(flood)
    control = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    control.bind((SENDER_ADDR, CONTROL_PORT))
    control.settimeout(0.5)
    payload = b"x" * PAYLOAD
    target = (RECEIVER_ADDR, FLOOD_PORT)
    sent = acked = stalls = 0
    started = time.monotonic()
    deadline = started + RUN_SECONDS
    while sent < count and time.monotonic() < deadline:
        while sent - acked < window and sent < count:
            floods[sent % len(floods)].sendto(payload, target)
            sent += 1
        try:
            acked = max(acked, struct.unpack("!Q", control.recv(64)[:8])[0])
        except socket.timeout:
            stalls += 1
            acked = sent  # lost packets are never acked: carry on
    received = None
    end = time.monotonic() + 5
    while time.monotonic() < end:
        try:
            message = control.recv(64)
        except socket.timeout:
            continue
        if message.endswith(b"END"):
            received = struct.unpack("!Q", message[:8])[0]
            break
    elapsed = time.monotonic() - started
    print(json.dumps({"sent": sent, "received": received, "seconds": elapsed, "stalls": stalls}), flush=True)


# -- namespaces ----------------------------------------------------------------------

def sh(*args: str, check: bool = True) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


class Pair:
    def __init__(self):
        tag = os.getpid()
        self.sender, self.receiver = f"dgbench{tag}s", f"dgbench{tag}r"

    def __enter__(self):
        for ns in (self.sender, self.receiver):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", "dgb0", "netns", self.sender, "type", "veth", "peer", "name", "dgb1",
           "netns", self.receiver)
        for ns, dev, addr in ((self.sender, "dgb0", SENDER_ADDR), (self.receiver, "dgb1", RECEIVER_ADDR)):
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        for address in SENDER_FLOWS[1:]:
            sh("ip", "-n", self.sender, "addr", "add", f"{address}/24", "dev", "dgb0")
        return self

    def __exit__(self, *exc):
        for ns in (self.sender, self.receiver):
            sh("ip", "netns", "del", ns, check=False)

    def popen(self, ns: str, args: list[str], **kwargs) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        return subprocess.Popen(["ip", "netns", "exec", ns, *args], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def _wait_line(process: subprocess.Popen, stream, marker: str, seconds: float = 20) -> str:
    import select
    seen = ""
    end = time.monotonic() + seconds
    while marker not in seen and time.monotonic() < end and process.poll() is None:
        if select.select([stream], [], [], 0.2)[0]:
            seen += stream.readline()
    if marker not in seen:
        raise RuntimeError(f"process did not get ready: {seen}{process.stderr.read() if process.poll() is not None else ''}")
    return seen


def flood(pair: Pair, count: int, window: int) -> dict:
    me = str(Path(__file__).resolve())
    receiver = pair.popen(pair.receiver, [sys.executable, me, "--role", "receiver", "--count", str(count)])
    _wait_line(receiver, receiver.stdout, "ready")
    sender = pair.popen(pair.sender, [sys.executable, me, "--role", "sender", "--count", str(count),
                                      "--window", str(window)])
    out, err = sender.communicate(timeout=RUN_SECONDS + 30)
    receiver.communicate(timeout=30)
    if sender.returncode != 0:
        raise RuntimeError(f"sender failed: {err}")
    result = json.loads(out.strip().splitlines()[-1])
    result["pps"] = (result["received"] or 0) / result["seconds"]
    result["lost"] = result["sent"] - (result["received"] or 0)
    return result


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
    def __init__(self, pair: Pair, filter_text: str, name: str, profile: str | None = None, workers: int = 1):
        self.pair, self.filter_text, self.name, self.profile = pair, filter_text, name, profile
        self.workers = workers
        self.output = ""

    def __enter__(self):
        command = [sys.executable]
        if self.profile:
            command += ["-m", "cProfile", "-o", self.profile]
        command += ["-m", "divertgui.cli", "passthru", self.filter_text, "--batch", "255",
                    "--workers", str(self.workers)]
        self.process = self.pair.popen(self.pair.receiver, command)
        _wait_line(self.process, self.process.stderr, "Ctrl+C to stop")
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
queue.bind(%d, accept, max_len=4096)
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
        self.rule = ["-t", "mangle", "-I", "INPUT", "-p", "udp", "--dport", str(FLOOD_PORT), "-j", "NFQUEUE",
                     "--queue-num", str(NFQ_NUMBER), "--queue-bypass"]

    def __enter__(self):
        self.process = self.pair.popen(self.pair.receiver, [sys.executable, "-c", NFQ_SCRIPT % NFQ_NUMBER])
        _wait_line(self.process, self.process.stdout, "ready")
        sh("ip", "netns", "exec", self.pair.receiver, "iptables", "-w", *self.rule)
        return self

    def __exit__(self, *exc):
        listing = sh("ip", "netns", "exec", self.pair.receiver, "iptables", "-w", "-t", "mangle", "-L", "INPUT",
                     "-n", "-v", "-x")
        self.hits = sum(int(line.split()[0]) for line in listing.splitlines() if "NFQUEUE" in line)
        rule = list(self.rule)
        rule[rule.index("-I")] = "-D"
        sh("ip", "netns", "exec", self.pair.receiver, "iptables", "-w", *rule)
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
        _wait_line(self.process, self.process.stdout, "ready")
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
    """CPU time (user + system, every thread) the process and its children (workers) have used so far,
    in ns (clock-tick resolution)."""
    if process is None:
        return None
    try:
        ticks = _ticks(process.pid)
        with open(f"/proc/{process.pid}/task/{process.pid}/children") as f:
            for child in f.read().split():
                ticks += _ticks(int(child))
    except (OSError, ValueError, IndexError):
        return None
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def _ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        # Fields after the command name, which is in parentheses and may hold spaces.
        fields = f.read().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def measure(pair: Pair, diverter, count: int, window: int) -> dict:
    try:
        with diverter:
            # CPU used during the flood only: start-up and clean-up left out. Unlike
            # pps it hardly moves with what else the machine runs meanwhile.
            process = getattr(diverter, "process", None)
            before = cpu_ns(process)
            result = flood(pair, count, window)
            after = cpu_ns(process)
    except Exception as exc:  # a contender that cannot run here is reported, not fatal
        return {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"}
    if before is not None and after is not None and result["sent"]:
        result["cpu_us"] = (after - before) / 1000 / result["sent"]
    counters = diverter.counters()
    result["bypassed"] = counters.get("bypassed", 0)
    result["overflowed"] = counters.get("overflowed", 0)
    return result


def profile_passthru(pair: Pair, count: int, window: int) -> str:
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
        flood(pair, count, window)
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("bench", "sender", "receiver"), default="bench")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", metavar="KEYS", help="comma-separated subset of a,d,ours,ours2,b,c")
    parser.add_argument("--profile", action="store_true", help="also profile `divert passthru` (cProfile)")
    args = parser.parse_args(argv)
    if args.role == "receiver":
        run_receiver(args.count)
        return 0
    if args.role == "sender":
        run_sender(args.count, args.window)
        return 0
    if os.geteuid() != 0 or shutil.which("iptables") is None:
        print("bench/passthru.py needs root and iptables (it creates network namespaces)", file=sys.stderr)
        return 1

    runs: dict[str, list[dict]] = {}
    names = {}
    with Pair() as pair:
        contenders = [
            ("a", lambda: NoDiversion(pair)),
            ("d", lambda: DivertPassthru(pair, f"udp.DstPort == {OTHER_PORT}", "(d) divert passthru, flood not matched")),
            ("ours", lambda: DivertPassthru(pair, f"udp.DstPort == {FLOOD_PORT}", "(ours) divert passthru")),
            ("ours2", lambda: DivertPassthru(pair, f"udp.DstPort == {FLOOD_PORT}", "(ours) divert passthru, 2 workers",
                                             workers=2)),
            ("b", lambda: NetfilterQueueBinding(pair)),
            ("c", lambda: PydivertEbpf(pair)),  # last: a crashed eBPF handle may leave programs attached
        ]
        # Rounds interleave the contenders, so that a busy moment of the
        # machine does not fall on one of them only; medians are compared.
        if args.only:
            contenders = [(key, make) for key, make in contenders if key in args.only.split(",")]
        for round_number in range(args.rounds):
            for key, make in contenders:
                if runs.get(key) and "error" in runs[key][-1]:
                    continue
                diverter = make()
                names[key] = diverter.name
                r = measure(pair, diverter, args.count, args.window)
                runs.setdefault(key, []).append(r)
                if "error" in r:
                    print(f"{diverter.name:<42} cannot run here: {r['error']}")
                else:
                    cpu = f"  diverter cpu {r['cpu_us']:.2f} us/packet" if "cpu_us" in r else ""
                    print(f"round {round_number + 1}  {diverter.name:<42} {r['pps']:>9.0f} pps  sent {r['sent']:>7}  "
                          f"lost {r['lost']:>6}  bypassed {r['bypassed']:>6}  stalls {r['stalls']}{cpu}", flush=True)
        if args.profile:
            print("\nwhere `divert passthru` spends its time (py-spy samples, all threads):")
            print(profile_passthru(pair, args.count, args.window))

    results = {}
    for key, rs in runs.items():
        good = [r for r in rs if "error" not in r]
        if not good:
            results[key] = rs[-1]
            continue
        pps = sorted(r["pps"] for r in good)
        results[key] = {"pps": pps[len(pps) // 2], "lost": sum(r["lost"] for r in good),
                        "bypassed": sum(r["bypassed"] for r in good), "sent": sum(r["sent"] for r in good)}
        cpus = sorted(r["cpu_us"] for r in good if "cpu_us" in r)
        if cpus:
            results[key]["cpu_us"] = cpus[len(cpus) // 2]
    print("\nmedians over", args.rounds, "rounds")
    for key, r in results.items():
        if "error" not in r:
            cpu = f", diverter cpu {r['cpu_us']:.2f} us/packet" if "cpu_us" in r else ""
            print(f"  {names[key]:<42} {r['pps']:>9.0f} pps  lost {r['lost']} of {r['sent']}, bypassed {r['bypassed']}{cpu}")

    def ratio(x: str, y: str) -> str:
        if x not in results or y not in results or "error" in results[x] or "error" in results[y] or not results[y]["pps"]:
            return "n/a"
        return f"{results[x]['pps'] / results[y]['pps']:.2f}x"

    ours = results.get("ours", {})
    print("\nsummary")
    print(f"  ours vs (b) NetfilterQueue: {ratio('ours', 'b')} (target >= 1.0x); "
          f"ours lost {ours.get('lost', 'n/a')}, bypassed {ours.get('bypassed', 'n/a')} (target 0 and 0)")
    if "cpu_us" in ours and "cpu_us" in results.get("b", {}):
        print(f"  diverter cpu per packet, ours vs (b): {ours['cpu_us']:.2f} vs {results['b']['cpu_us']:.2f} us "
              f"({ours['cpu_us'] / results['b']['cpu_us']:.2f}x)")
    ours2 = results.get("ours2", {})
    print(f"  ours, 2 workers vs (b): {ratio('ours2', 'b')} (target >= 1.5x); vs (a): {ratio('ours2', 'a')} "
          f"(target >= 0.7x); lost {ours2.get('lost', 'n/a')}, bypassed {ours2.get('bypassed', 'n/a')} (target 0 and 0)")
    print(f"  ours vs (c) pydivert eBPF:  {ratio('ours', 'c')}"
          + (f" ((c) cannot run here: {results['c']['error']})" if "error" in results.get("c", {}) else ""))
    print(f"  ours vs (a) no diversion:   {ratio('ours', 'a')}")
    print(f"  (d) handle open, flood not matched vs (a): {ratio('d', 'a')} (target >= 0.95x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
