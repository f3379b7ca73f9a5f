"""The cost of process attribution: packets/s the session stores with and without
attributing each packet to its local process (of known flows), and the time to
attribute a new flow.

The packets are UDP datagrams of real sockets this script binds on loopback
(it sends nothing), in batches as the session receives them, so every lookup
finds a real socket in /proc. "Stored" is the session's per-batch work for a
sniffed packet: the attribution (when on) and the append to the capture
store. Runs both side by side in interleaved rounds; summary last.

New flows are timed three ways: with the capture's table, with a fresh
table each time, and with the kernel's record of socket creators (a
cgroup/sock_create program on this process's own cgroup, as a live capture
loads on the machine's root), which answers without reading /proc.

Then the kernel side of learning processes from FLOW events: UDP datagrams
this process sends on loopback per second of its CPU time (the kernel's
share included), with and without a FLOW handle whose eBPF programs watch
this process's own cgroup (it needs CAP_BPF and CAP_NET_ADMIN, or root).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from divertgui.engine.address import Address, Flag, Layer  # noqa: E402
from divertgui.engine.processes import FlowOwners, ProcessList  # noqa: E402
from divertgui.engine.store import CaptureStore, Verdict  # noqa: E402

BATCH = 255


def udp4(sport: int, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                       b"\x7f\x00\x00\x01", b"\x7f\x00\x00\x01") + udp


def bound_sockets(count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    return sockets


def stored_per_second(batches, addresses, owners: FlowOwners | None) -> float:
    """Packets per second of this process's CPU time (steadier than wall time on a loaded machine)."""
    store = CaptureStore()
    outbound = [True] * BATCH
    started = time.process_time()
    for raws in batches:
        processes = owners.indexes(raws, outbound) if owners is not None else 0
        store.append_batch(raws, addresses, Verdict.SNIFFED, 0, processes)
    return sum(map(len, batches)) / (time.process_time() - started)


def new_port_socket(used: set) -> socket.socket:
    """A UDP socket bound on loopback to a port not in `used` (then added): a port used again
    would be a flow the table already knows."""
    for _ in range(1000):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        if s.getsockname()[1] not in used:
            used.add(s.getsockname()[1])
            return s
        s.close()
    raise SystemExit("no new loopback port in 1000 tries")


def new_flow_ms(count: int, warm: bool, creators=None) -> tuple[list[float], list[float]]:
    """Milliseconds to attribute the first packet of each of `count` new sockets' flows, wall and CPU time.

    warm: one table, as in a capture, which looks at processes that owned
    sockets lately first; cold: a fresh table each time, which looks through
    every process, newest first; `creators`: the kernel's record of socket
    creators asked first (a warm table)."""
    times, cpu = [], []
    owners = FlowOwners(ProcessList(), creators=creators)
    used = set()
    for _ in range(count):
        with new_port_socket(used) as s:
            raw = udp4(s.getsockname()[1], 9, b"new")
            if not warm:
                owners.close()
                owners = FlowOwners(ProcessList())
            started, cpu_started = time.perf_counter(), time.thread_time()
            index = owners.indexes([raw], [True])[0]
            times.append((time.perf_counter() - started) * 1000)
            cpu.append((time.thread_time() - cpu_started) * 1000)
            if not index:
                raise SystemExit("a new flow of this process was not attributed: /proc is not readable here")
    owners.close()
    if creators is not None and owners.created != count:
        raise SystemExit(f"{count - owners.created} of {count} new flows were not in the record of socket creators")
    return times, cpu


def own_cgroup() -> str:
    """This process's cgroup v2 directory; OSError or StopIteration where it has none."""
    from divertgui.engine.backends.cgroups import cgroup2_mount
    with open("/proc/self/cgroup") as lines:
        own = next(line.split(":", 2)[2].strip() for line in lines if line.startswith("0::"))
    return os.path.join(cgroup2_mount(), own.lstrip("/"))


def recorded_new_flow_ms(count: int) -> tuple[list[float], list[float]] | str:
    """new_flow_ms with the record of socket creators, or why it cannot be loaded here."""
    from divertgui.engine.backends.socket_creators import SocketCreators
    try:
        creators = SocketCreators(own_cgroup())
    except (OSError, StopIteration) as exc:
        return f"no record of socket creators here: {exc or 'this process has no cgroup v2'}"
    # FlowOwners closes it.
    return new_flow_ms(count, warm=True, creators=creators)


def sends_per_second(count: int) -> float:
    """Datagrams sent to a loopback socket (which never reads them) per second of CPU time."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        receiver.bind(("127.0.0.1", 0))
        target, payload = receiver.getsockname(), b"x" * 64
        started = time.process_time()
        for _ in range(count):
            sender.sendto(payload, target)
        return count / (time.process_time() - started)


def flow_handle_rates(rounds: int, count: int) -> tuple[list[float], list[float]] | str:
    """(without, with) send rates over interleaved rounds, or why they cannot be measured."""
    from divertgui.engine.backends.socket_layer import FlowBackend
    from divertgui.engine.handle import Divert
    try:
        cgroup = own_cgroup()
        Divert("udp", Layer.FLOW, flags=Flag.SNIFF | Flag.RECV_ONLY, backend=FlowBackend(cgroup)).open().close()
    except (OSError, StopIteration) as exc:
        return f"no FLOW handle here: {exc or 'this process has no cgroup v2'}"
    rates = {False: [], True: []}
    for round_number in range(rounds):
        for watched in (False, True) if round_number % 2 else (True, False):
            if not watched:
                rates[False].append(sends_per_second(count))
                continue
            with Divert("udp", Layer.FLOW, flags=Flag.SNIFF | Flag.RECV_ONLY, backend=FlowBackend(cgroup)):
                rates[True].append(sends_per_second(count))
    return rates[False], rates[True]


def p99(values: list[float]) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=200, help="sockets the packets belong to")
    parser.add_argument("--packets", type=int, default=25_000, help="packets per round and configuration")
    parser.add_argument("--rounds", type=int, default=25,
                        help="interleaved rounds; each is short, so the median of many rides out a busy second")
    parser.add_argument("--new-flows", type=int, default=300, help="new flows timed")
    parser.add_argument("--sends", type=int, default=50_000, help="datagrams sent per round, with and without "
                                                                  "a FLOW handle")
    args = parser.parse_args()

    sockets = bound_sockets(args.flows)
    ports = [s.getsockname()[1] for s in sockets]
    packets = [udp4(ports[i % len(ports)], 9, b"x" * 64) for i in range(args.packets)]
    batches = [packets[at:at + BATCH] for at in range(0, len(packets) - BATCH + 1, BATCH)]
    addresses = [Address(outbound=True, loopback=True)] * BATCH
    # The flows are known before the rounds, as in a capture that has run a while: new flows are timed below.
    owners = FlowOwners(ProcessList())
    owners.indexes(packets[:len(ports)], [True] * len(ports))
    rates = {False: [], True: []}
    ratios = []
    for round_number in range(1, args.rounds + 1):
        # Short rounds, the order alternating: the load of a shared machine changes by the second.
        order = (False, True) if round_number % 2 else (True, False)
        for attribute in order:
            rates[attribute].append(stored_per_second(batches, addresses, owners if attribute else None))
        ratios.append(rates[True][-1] / rates[False][-1])
        print(f"round {round_number:>2}  without {rates[False][-1]:>10,.0f} pps  with {rates[True][-1]:>10,.0f} pps"
              f"  ratio {ratios[-1]:.2f}")
    (warm, warm_cpu), (cold, cold_cpu) = (new_flow_ms(args.new_flows, warm=True),
                                          new_flow_ms(max(10, args.new_flows // 10), warm=False))
    recorded = recorded_new_flow_ms(args.new_flows)
    for sock in sockets:
        sock.close()
    watched = flow_handle_rates(args.rounds, args.sends)

    without, with_ = statistics.median(rates[False]), statistics.median(rates[True])
    print()
    print(f"stored without attribution   {without:>12,.0f} pps (median of {args.rounds})")
    print(f"stored with attribution      {with_:>12,.0f} pps  ratio {statistics.median(ratios):.2f} "
          f"(median of the rounds' ratios; target >= 0.9)")
    for name, wall, cpu in (("capture's table", warm, warm_cpu), ("fresh table    ", cold, cold_cpu)):
        print(f"new flow, {name}    p50 {statistics.median(wall):.2f} ms  p99 {p99(wall):.2f} ms"
              f"  (CPU p99 {p99(cpu):.2f} ms; {len(wall)} flows)")
    if isinstance(recorded, str):
        print(f"new flow, recorded creators: {recorded}")
    else:
        print(f"new flow, recorded creators p50 {statistics.median(recorded[0]):.2f} ms  p99 {p99(recorded[0]):.2f} ms"
              f"  (CPU p99 {p99(recorded[1]):.2f} ms; {len(recorded[0])} flows)")
    print("target: p99 < 5 ms; a fresh table looks through every process, the capture's those that owned "
          "sockets lately first; the record of socket creators reads no /proc")
    if isinstance(watched, str):
        print(f"UDP sends under a FLOW handle: {watched}")
        return
    plain, under = statistics.median(watched[0]), statistics.median(watched[1])
    ratios = [b / a for a, b in zip(*watched)]
    print(f"UDP sends, no FLOW handle     {plain:>12,.0f} pps (median of {args.rounds})")
    print(f"UDP sends, FLOW handle open   {under:>12,.0f} pps  ratio {statistics.median(ratios):.2f} "
          f"(median of the rounds' ratios)")


if __name__ == "__main__":
    main()
