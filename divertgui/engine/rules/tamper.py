"""Tamper: flip payload bytes."""

from __future__ import annotations

from divertgui.engine.rules.base import Param, Rule, chance


class Tamper(Rule):
    """With `chance` percent, `flips` payload bytes (at random places) are XORed with a random
    non-zero value. With redo_checksum the checksums are fixed so the receiver takes the
    damaged data; without it they are left as they were, so the damage shows as bad checksums.
    Packets without payload pass untouched."""

    kind = "tamper"
    rewrites = True
    params = {
        "chance": chance(10.0),
        "flips": Param(1, 1, 64),
        "redo_checksum": Param(True),
    }

    def process(self, packet, now_ns: int, out: list) -> None:
        out.append(packet)
        if not self.hit(self.chance):
            return
        payload = packet.payload
        if not payload:
            return
        damaged = bytearray(payload)
        for _ in range(self.flips):
            damaged[self.rng.randrange(len(damaged))] ^= self.rng.randrange(1, 256)
        if damaged == payload:
            return
        packet.payload = bytes(damaged)
        if self.redo_checksum:
            packet.recalculate_checksums()
        self.counters["modified"] += 1

    def pass_matched(self, packets, now_ns: int) -> bool:
        return self.chance <= 0
