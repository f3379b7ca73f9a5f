"""Duplicate: send a packet several times."""

from __future__ import annotations

from divertgui.engine.packet import Packet
from divertgui.engine.rules.base import Param, Rule, chance


def copy_packet(packet) -> Packet:
    """A new packet with the same bytes and address and no pending verdict: it is injected."""
    return Packet(bytearray(packet.raw), packet.address.copy())


class Duplicate(Rule):
    """With `chance` percent a packet goes out `count` times in all (the original and count-1 copies)."""

    kind = "duplicate"
    params = {
        "count": Param(2, 2, 50),
        "chance": chance(10.0),
    }

    def process(self, packet, now_ns: int, out: list) -> None:
        out.append(packet)
        if self.hit(self.chance):
            copies = self.count - 1
            out.extend(copy_packet(packet) for _ in range(copies))
            self.counters["duplicated"] += copies

    def pass_matched(self, packets, now_ns: int) -> bool:
        return self.chance <= 0

    copy = staticmethod(copy_packet)

    def draw_matched(self, packets, now_ns: int) -> list[int]:
        count = self.count
        times = [count if hit else 1 for hit in self.hits(self.chance, len(packets))]
        self.counters["duplicated"] += (len(times) - times.count(1)) * (count - 1)
        return times
