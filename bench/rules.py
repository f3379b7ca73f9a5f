"""Passthru packets per second with 0 rules, 8 rules of which 1 matches, and 8 rules that all match,
as ratios to 0 rules (targets: x0.9 and x0.7).

Configurations are interleaved, side by side in this run:
  passthru  a real Divert handle driven by run_conditions in a network namespace,
            a UDP flood over loopback counted by its receiver (needs root)
  pipeline  Pipeline.process alone over batches of synthetic UDP/TCP packets:
            the rules' own cost per packet, without the kernel
The rules that match pass every packet (chances 0, lag 0, a wide bucket), so the
figures are the cost of matching and running them; the 7 rules that do not
match select other ports, as rules of one profile for several services do.
Summary last.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from divertgui.engine.address import Address  # noqa: E402
from divertgui.engine.packet import Packet  # noqa: E402
from divertgui.engine.rules import Pipeline, rules_from_dicts  # noqa: E402

PORT = 40999
ROUNDS = 3

EIGHT = [
    {"kind": "lag", "filter": "udp or tcp", "inbound_ms": 0, "outbound_ms": 0},
    {"kind": "drop", "filter": "udp or tcp", "chance": 0.0},
    {"kind": "throttle", "filter": "udp or tcp", "chance": 0.0},
    {"kind": "out_of_order", "filter": "udp or tcp", "chance": 0.0},
    {"kind": "duplicate", "filter": "udp or tcp", "chance": 0.0},
    {"kind": "tamper", "filter": "udp or tcp", "chance": 0.0},
    {"kind": "reset", "filter": "tcp", "chance": 0.0},
    {"kind": "bandwidth", "filter": "udp or tcp", "kbps": 10_000_000, "queue_limit": 100_000},
]
# Other services' rules: the same kinds, on ports the flood does not use.
OTHERS = [{**rule, "filter": f"udp.DstPort == {PORT + 1 + i} or tcp.DstPort == {PORT + 1 + i}"}
          for i, rule in enumerate(EIGHT[:7])]
ONE_OF_EIGHT = OTHERS[:4] + [{**EIGHT[1], "filter": f"udp.DstPort == {PORT} or tcp.DstPort == 443"}] + OTHERS[4:]
CONFIGS = {"0 rules": [], "8, 1 matches": ONE_OF_EIGHT, "8, all match": EIGHT}
TARGETS = {"8, 1 matches": 0.9, "8, all match": 0.7}


def synthetic_packets(count: int) -> list[Packet]:
    import dpkt
    packets = []
    for i in range(count):
        if i % 2:
            transport = dpkt.udp.UDP(sport=5000 + i % 50, dport=PORT, data=b"q" * 40)
            transport.ulen = len(transport)
            proto = 17
        else:
            transport = dpkt.tcp.TCP(sport=40000 + i % 50, dport=443, seq=i, flags=0x18, data=b"t" * 100)
            proto = 6
        ip = dpkt.ip.IP(src=b"\x0a\0\0\x01", dst=b"\x0a\0\0\x02", p=proto, ttl=64, data=transport)
        ip.len = len(ip)
        packets.append(Packet(bytes(ip), Address(outbound=bool(i % 3))))
    return packets


def pipeline_pps(rules: list[dict], packets: list[Packet], seconds: float = 0.5) -> float:
    pipeline = Pipeline(rules_from_dicts(rules))
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for i in range(0, len(packets), 255):
            now = time.monotonic_ns()
            done += len(pipeline.due(now)) + len(pipeline.process(packets[i:i + 255], now))
    return done / (time.perf_counter() - start)


FLOOD = r"""
import socket, sys, threading, time
seconds = float(sys.argv[1])
rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
rx.bind(("127.0.0.1", int(sys.argv[2])))
rx.settimeout(0.2)
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
count, stop = [0], threading.Event()
def receive():
    while not stop.is_set():
        try:
            rx.recv(2048)
            count[0] += 1
        except socket.timeout:
            pass
threading.Thread(target=receive, daemon=True).start()
payload = b"x" * 64
end = time.monotonic() + seconds
while time.monotonic() < end:
    for _ in range(64):
        tx.sendto(payload, ("127.0.0.1", int(sys.argv[2])))
    time.sleep(0.0002)
time.sleep(0.3)
stop.set()
print(count[0] / seconds)
"""


def netns_pps(namespace: str, rules: list[dict], seconds: float = 1.5) -> float:
    from divertgui.engine.handle import Divert
    from divertgui.engine.rules.runner import run_conditions
    from tests.integration.conftest import Namespace
    ns = Namespace(namespace)
    with ns.entered():
        pipeline, stop = Pipeline(rules_from_dicts(rules)), threading.Event()
        with Divert(f"udp.DstPort == {PORT}") as handle:
            runner = threading.Thread(target=run_conditions, args=(handle, pipeline, stop), daemon=True)
            runner.start()
            out = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", FLOOD, str(seconds),
                                  str(PORT)], capture_output=True, text=True, timeout=60, check=True).stdout
            stop.set()
            runner.join(10)
    return float(out)


def can_divert() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("ip") is None or shutil.which("iptables") is None:
        return "ip or iptables missing"
    return None


def measure(run) -> dict[str, float]:
    figures: dict[str, list[float]] = {config: [] for config in CONFIGS}
    for _ in range(ROUNDS):
        for config, rules in CONFIGS.items():
            figures[config].append(run(rules))
    return {config: statistics.median(values) for config, values in figures.items()}


def main() -> int:
    packets = synthetic_packets(2550)
    pipeline = measure(lambda rules: pipeline_pps(rules, packets))
    for config, value in pipeline.items():
        if config != "0 rules":
            print(f"pipeline  {config:12} {value:12,.0f} pps   {1e6 / value:6.2f} us per packet")
    passthru, reason = None, can_divert()
    if reason is None:
        namespace = f"dgbench{os.getpid()}"
        subprocess.run(["ip", "netns", "add", namespace], check=True)
        try:
            subprocess.run(["ip", "-n", namespace, "link", "set", "lo", "up"], check=True)
            passthru = measure(lambda rules: netns_pps(namespace, rules))
        finally:
            subprocess.run(["ip", "netns", "del", namespace], check=False)
        for config, value in passthru.items():
            print(f"passthru  {config:12} {value:12,.0f} pps   x{value / passthru['0 rules']:.2f}")
    print("\nsummary: passthru pps as a ratio to 0 rules (higher is better)")
    if passthru is None:
        print(f"  passthru skipped: {reason}; rules alone: " + ", ".join(
            f"{config} {pipeline[config]:,.0f} pps" for config in TARGETS))
    else:
        print("  " + ", ".join(f"{config} x{passthru[config] / passthru['0 rules']:.2f} (target x{target})"
                               for config, target in TARGETS.items())
              + f"   (0 rules: {passthru['0 rules']:,.0f} pps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
