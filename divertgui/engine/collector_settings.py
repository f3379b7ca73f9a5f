"""The cyclic garbage collector's setting for a process whose work is moving packets.

Each packet received is a few objects the collector tracks (its netlink
message, its Address, its Packet, the tuples that carry them), alive until
its verdict, so a batch of 255 packets holds about 2,000 of them at once. At
Python's default threshold, 700 more tracked objects allocated than freed,
the collector then ran two or three times per batch, and every tenth run
or so walked every object of the process, tens of thousands of them, most
made by imports: about 1 us per packet of a diverter's 7-9 us
(bench/README.md).
"""

from __future__ import annotations

import gc

# Above what a few batches of packets hold at once: a steady flow starts no
# collection, while cyclic garbage (which the engine seldom makes) is still
# collected once this many objects have piled up.
PACKET_FLOW_THRESHOLD = 50_000


def set_for_packet_flow() -> None:
    """Raise the collector's first threshold to PACKET_FLOW_THRESHOLD (never lower it)."""
    first, second, third = gc.get_threshold()
    if first and first < PACKET_FLOW_THRESHOLD:
        gc.set_threshold(PACKET_FLOW_THRESHOLD, second, third)
