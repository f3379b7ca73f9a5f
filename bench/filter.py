"""Filter evaluations per second: compiled filters against the naive approach
(dpkt parse, then attribute tests) on the same mixed packet set, plus compile
times. Prints ratios measured side by side in this run; summary last."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dpkt  # noqa: E402

from divertgui.engine.address import Layer  # noqa: E402
from divertgui.engine.filter import Filter, compile_filter  # noqa: E402
from tests import packet_gen  # noqa: E402


def _ip(raw):
    return dpkt.ip.IP(raw) if raw[0] >> 4 == 4 else dpkt.ip6.IP6(raw)


def naive_port80(raw, a):
    ip = _ip(raw)
    return a.outbound and isinstance(ip.data, dpkt.tcp.TCP) and ip.data.dport == 80


def naive_range(raw, a):
    ip = _ip(raw)
    return (isinstance(ip, dpkt.ip.IP) and b"\x0a\x00\x00\x00" <= ip.src <= b"\x0a\xff\xff\xff"
            and isinstance(ip.data, dpkt.udp.UDP))


def naive_payload(raw, a):
    ip = _ip(raw)
    return isinstance(ip.data, dpkt.tcp.TCP) and ip.data.data[:4] == b"GET "


def naive_twenty(raw, a):
    ip = _ip(raw)
    t = ip.data
    if not isinstance(t, dpkt.tcp.TCP):
        return False
    return any(t.dport == p or t.sport == p for p in (80, 443, 8080, 53, 22, 25, 110, 143, 993, 995))


def naive_conditional(raw, a):
    ip = _ip(raw)
    if isinstance(ip.data, dpkt.tcp.TCP):
        return ip.data.dport == 443
    return isinstance(ip.data, dpkt.udp.UDP) and ip.data.dport == 53


CASES = [
    ("outbound and tcp.DstPort == 80", "outbound and tcp.DstPort == 80", naive_port80),
    ("address range and udp", "ip.SrcAddr >= 10.0.0.0 and ip.SrcAddr <= 10.255.255.255 and udp", naive_range),
    ("payload bytes", "tcp.Payload32[0] == 0x47455420", naive_payload),
    ("20 clauses", " or ".join(f"tcp.DstPort == {p} or tcp.SrcPort == {p}"
                               for p in (80, 443, 8080, 53, 22, 25, 110, 143, 993, 995)), naive_twenty),
    ("conditional", "(tcp ? tcp.DstPort == 443 : udp.DstPort == 53)", naive_conditional),
]


def packets(count: int):
    """Generated IPv4 (70 %) and IPv6 packets (TCP, UDP, ICMP, options,
    extension headers, fragments) that dpkt can parse."""
    rng = random.Random(1)
    out = []
    while len(out) < count:
        raw = packet_gen.ipv4_packet(rng) if rng.random() < 0.7 else packet_gen.ipv6_packet(rng)
        try:
            _ip(raw)
        except Exception:  # dpkt raises many kinds on odd packets
            continue
        out.append((raw, packet_gen.address_for(rng, raw)))
    return out


def rate(fn, items) -> float:
    # CPU time of this process: other load on the machine does not count.
    start = time.process_time()
    for raw, address in items:
        try:
            fn(raw, address)
        except Exception:  # the naive approach has to survive odd packets too
            pass
    return len(items) / max(time.process_time() - start, 1e-9)


def side_by_side(ours, naive, items, rounds: int = 7) -> tuple[float, float]:
    """Best rates of both, measured in alternating rounds so that load on the
    machine affects both alike."""
    best_ours = best_naive = 0.0
    for _ in range(rounds):
        best_ours = max(best_ours, rate(ours, items))
        best_naive = max(best_naive, rate(naive, items))
    return best_ours, best_naive


def main() -> int:
    items = packets(20000)
    rows = []
    for label, text, naive in CASES:
        compile_ms = float("inf")
        for _ in range(20):
            start = time.perf_counter()
            Filter.build(text, Layer.NETWORK)  # uncached
            compile_ms = min(compile_ms, (time.perf_counter() - start) * 1000)
        compiled = compile_filter(text)
        ours, theirs = side_by_side(compiled.match, naive, items)
        rows.append((label, ours, theirs, ours / theirs, compile_ms))
        print(f"{label:28s} compiled {ours:12,.0f}/s   naive dpkt {theirs:12,.0f}/s   ratio {ours / theirs:5.1f}x"
              f"   compile {compile_ms:6.3f} ms")
    print()
    print("summary")
    worst = min(r[3] for r in rows)
    slowest = max(r[4] for r in rows)
    print(f"  lowest speed-up vs naive dpkt: {worst:.1f}x (target >= 10x)")
    print(f"  slowest compile (best of 20): {slowest:.3f} ms (target < 1 ms for typical filters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
