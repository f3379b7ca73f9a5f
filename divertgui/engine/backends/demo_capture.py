"""The demo capture: a short, reproducible recording of the demo network.

    python -m divertgui.engine.backends.demo_capture resources/demo.pcapng

A sniffing handle with the filter "true" reads the demo network on a
simulated clock, so the same seed always gives the same packets with the
same timestamps, however fast or slow the machine is. Conversations start
for `start_seconds`; then no new one starts and the capture runs on until
the open ones have finished, so that every TCP connection in the file is
complete.
"""

from __future__ import annotations

import argparse
import sys

from divertgui.engine.address import Flag
from divertgui.engine.backends.demo import INTERFACE_NAMES, DemoBackend
from divertgui.engine.handle import Divert
from divertgui.engine.pcapng import PcapngWriter

SEED = 2026
RATE = 250.0
START_SECONDS = 1.5
# 2026-01-01T12:00:00Z: a fixed wall clock makes the file itself reproducible.
WALL_CLOCK_START_NS = 1_767_268_800 * 1_000_000_000
# Longer than the demo's retransmission timeout and its UDP exchanges' wait,
# so that a quiet spell this long means every conversation has ended.
QUIET_SECONDS = 2.0
MAX_SECONDS = 30.0
BATCH = 255
READ_SECONDS = 0.05


def demo_interface_name(if_idx: int, loopback: bool) -> str | None:
    return INTERFACE_NAMES.get(if_idx)


class SimulatedClock:
    """Monotonic nanoseconds that advance only when the demo network sleeps."""

    def __init__(self, start_ns: int = 1_000_000_000):
        self.ns = start_ns

    def __call__(self) -> int:
        return self.ns

    def sleep(self, seconds: float) -> None:
        self.ns += max(int(seconds * 1e9), 1_000)


def record_demo(seed: int = SEED, rate: float = RATE, start_seconds: float = START_SECONDS) -> list[tuple]:
    """(raw, address, wall_ns) of every packet of the demo network, in capture order."""
    clock = SimulatedClock()
    backend = DemoBackend(seed=seed, rate=rate, clock=clock, sleep=clock.sleep)
    packets = []
    with Divert("true", flags=Flag.SNIFF | Flag.RECV_ONLY, backend=backend) as handle:
        started = clock()
        stop_starting = started + int(start_seconds * 1e9)
        give_up = started + int(MAX_SECONDS * 1e9)
        last_packet = started
        while clock() < give_up:
            if backend.rate and clock() >= stop_starting:
                backend.set_rate(0)
            batch = handle.recv_batch(BATCH, READ_SECONDS)
            for packet in batch:
                wall_ns = WALL_CLOCK_START_NS + packet.address.timestamp - started
                packets.append((packet.raw, packet.address, wall_ns))
            if batch:
                last_packet = clock()
            elif not backend.rate and clock() - last_packet >= QUIET_SECONDS * 1e9:
                break
        else:
            raise RuntimeError(f"the demo network was still talking after {MAX_SECONDS} simulated seconds")
    return packets


def write_demo_capture(path: str, seed: int = SEED) -> int:
    """Writes the demo capture to `path`; returns the number of packets."""
    packets = record_demo(seed)
    comment = f"divertgui demo network, seed {seed}, {len(packets)} packets"
    with PcapngWriter(path, application="divertgui demo_capture", comment=comment,
                      interface_name=demo_interface_name) as writer:
        writer.write_batch(packets)
        return writer.count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m divertgui.engine.backends.demo_capture",
                                     description="Write a short, reproducible capture of the demo network.")
    parser.add_argument("path", metavar="FILE.pcapng", help="where to write the capture")
    parser.add_argument("--seed", type=int, default=SEED, help=f"the demo network's seed (default {SEED})")
    args = parser.parse_args(argv)
    try:
        count = write_demo_capture(args.path, args.seed)
    except OSError as exc:
        print(f"demo_capture: cannot write {args.path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote {count} packets to {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
