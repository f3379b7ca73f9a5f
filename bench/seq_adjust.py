"""Cost per packet of renumbering a connection with 10, 1,000 and 20,000 edits already made
to it, as ratios to 10 edits (target: about x1, that is no growth with the edits).

One packet's work, as payload_replace and the session do it on an edited connection: the
segment's new sequence number (shift_at), whether it is an edited one (find), a
retransmission check (redo), and its acknowledgement and two SACK edges mapped back
(to_sender). The edits are one every 1,000 bytes, as a rule replacing a pattern that
recurs in a transfer makes them; the packets probed lie among the latest edits.
Configurations are interleaved, medians of rounds. Summary last.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from divertgui.engine.rules.seq_adjust import Flow  # noqa: E402

START = (1 << 32) - 5_000_000     # the stream wraps at 2^32 during the edits
EVERY = 1000
SEGMENT = 1448
ROUNDS = 5
PACKETS = 2000
COUNTS = (10, 1_000, 20_000)


def edited_flow(edits: int) -> Flow:
    flow = Flow()
    for i in range(edits):
        flow.record((START + i * EVERY) % (1 << 32), 100, 4, b"x" * 104)
    return flow


def per_packet_us(flow: Flow, edits: int) -> float:
    end = START + edits * EVERY
    seqs = [(end - SEGMENT * (i % 6)) % (1 << 32) for i in range(PACKETS)]
    payload = b"y" * SEGMENT
    start = time.perf_counter()
    for seq in seqs:
        flow.shift_at(seq)
        flow.find(seq)
        flow.redo(seq, payload)
        flow.to_sender(seq)
        flow.to_sender(seq - SEGMENT)
        flow.to_sender(seq + SEGMENT)
    return (time.perf_counter() - start) / PACKETS * 1e6


def main() -> None:
    flows = {count: edited_flow(count) for count in COUNTS}
    times: dict[int, list[float]] = {count: [] for count in COUNTS}
    for _ in range(ROUNDS):
        for count in COUNTS:
            times[count].append(per_packet_us(flows[count], count))
    base = statistics.median(times[COUNTS[0]])
    for count in COUNTS:
        median = statistics.median(times[count])
        print(f"{count:>7,} edits   {median:8.2f} us per packet   x{median / base:.2f}")


if __name__ == "__main__":
    main()
