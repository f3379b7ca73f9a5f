"""Passthru packets per second with 0 rules, 8 rules of which 1 matches, and 8 rules that all match,
as ratios to 0 rules (targets: x0.9 and x0.7).

Configurations are interleaved, side by side in this run:
  passthru  a real Divert handle driven by run_conditions in a network namespace, under
            udp_flood.py's flood from another namespace (needs root); besides pps, the
            CPU time per packet of the whole path (flood and diverter), which the
            machine's load moves far less, and of the diverter alone
  pipeline  Pipeline.process alone over batches of synthetic UDP/TCP packets:
            the rules' own cost per packet, without the kernel
The rules that match pass every packet (chances 0, lag 0, a wide bucket), so the
figures are the cost of matching and running them; the 7 rules that do not
match select other ports, as rules of one profile for several services do.
Summary last.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from udp_flood import FLOOD_PORT, Pair, flood, load_average  # noqa: E402

from divertgui.engine.address import Address  # noqa: E402
from divertgui.engine.collector_settings import set_for_packet_flow  # noqa: E402
from divertgui.engine.packet import Packet  # noqa: E402
from divertgui.engine.read_pacing import DEFAULT_MOST_WAIT  # noqa: E402
from divertgui.engine.rules import Pipeline, rules_from_dicts  # noqa: E402

PORT = FLOOD_PORT
ROUNDS = 5

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


def netns_run(pair: Pair, rules: list[dict], seconds: float) -> dict[str, float]:
    """pps through the handle, and the whole path's CPU per packet (flood and diverter)."""
    from divertgui.engine.handle import Divert
    from divertgui.engine.rules.runner import run_conditions
    from tests.integration.conftest import Namespace
    with Namespace(pair.receiver).entered():
        pipeline, stop = Pipeline(rules_from_dicts(rules)), threading.Event()
        with Divert(f"udp.DstPort == {PORT}") as handle:
            # Paced as `divert conditions` reads its queue (its default --gather).
            runner = threading.Thread(target=run_conditions, args=(handle, pipeline, stop),
                                      kwargs={"gather": DEFAULT_MOST_WAIT}, daemon=True)
            runner.start()
            try:
                # This process only waits for the flood meanwhile: its CPU time is the diverter's.
                before = _cpu_seconds()
                result = flood(pair, seconds)
                diverter = _cpu_seconds() - before
            finally:
                stop.set()
                runner.join(10)
    if result["lost"]:
        print(f"  ({result['lost']} of {result['sent']} packets lost with {len(rules)} rules)")
    diverter_us = diverter * 1e6 / max(result["sent"], 1)
    return {"pps": result["pps"], "cpu_us": diverter_us + result.get("flood_cpu_us", 0.0), "diverter_us": diverter_us}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def can_divert() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("ip") is None:
        return "ip missing"
    return None


def measure(run, rounds: int) -> dict[str, dict[str, float]]:
    """The median of each figure run(rules) gives, per configuration. Each round starts
    at the next configuration, so that none always runs first or right after another."""
    figures: dict[str, list[dict]] = {config: [] for config in CONFIGS}
    order = list(CONFIGS)
    for round_ in range(rounds):
        for config in order[round_ % len(order):] + order[:round_ % len(order)]:
            figures[config].append(run(CONFIGS[config]))
    return {config: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            for config, runs in figures.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="counted seconds of flood per measurement")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args(argv)
    # The collector as the `divert` command sets it, whose `conditions` loop this measures.
    set_for_packet_flow()
    load_before = load_average()
    packets = synthetic_packets(2550)
    pipeline = measure(lambda rules: {"pps": pipeline_pps(rules, packets)}, args.rounds)
    for config, figures in pipeline.items():
        if config != "0 rules":
            print(f"pipeline  {config:12} {figures['pps']:12,.0f} pps   {1e6 / figures['pps']:6.2f} us per packet")
    passthru, reason = None, can_divert()
    if reason is None:
        with Pair() as pair:
            passthru = measure(lambda rules: netns_run(pair, rules, args.seconds), args.rounds)
        base = passthru["0 rules"]
        for config, figures in passthru.items():
            print(f"passthru  {config:12} {figures['pps']:12,.0f} pps   x{figures['pps'] / base['pps']:.2f}   "
                  f"whole path {figures['cpu_us']:6.2f} us per packet, diverter {figures['diverter_us']:5.2f}")
    print(f"\nsummary: passthru pps, and the inverse of the whole path's CPU per packet, as ratios to 0 rules; "
          f"medians of {args.rounds} rounds "
          f"({load_before} before, {load_average()} after; {os.cpu_count()} cores)")
    if passthru is None:
        print(f"  passthru skipped: {reason}; rules alone: " + ", ".join(
            f"{config} {pipeline[config]['pps']:,.0f} pps" for config in TARGETS))
        return 0
    base = passthru["0 rules"]
    for config, target in TARGETS.items():
        by_pps = passthru[config]["pps"] / base["pps"]
        by_cpu = base["cpu_us"] / passthru[config]["cpu_us"]
        print(f"  {config}: x{by_pps:.2f} (target >= x{target}) {'met' if by_pps >= target else 'NOT MET'}; "
              f"by whole-path CPU per packet x{by_cpu:.2f} {'met' if by_cpu >= target else 'NOT MET'}")
    print(f"  (0 rules: {base['pps']:,.0f} pps, {base['cpu_us']:.2f} us per packet)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
