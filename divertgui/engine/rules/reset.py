"""Reset: cut TCP connections with an RST to each end."""

from __future__ import annotations

from divertgui.engine.replies import reset_onward_in_place, tcp_reset
from divertgui.engine.rules.base import Rule, chance


class Reset(Rule):
    """With `chance` percent a matching TCP packet (not itself an RST) becomes an RST
    to its receiver, and an RST is sent back to its sender: both ends see the
    connection reset."""

    kind = "reset"
    rewrites = True
    params = {"chance": chance(0.0)}

    def setup(self) -> None:
        self.counters["reset"] = 0

    def process(self, packet, now_ns: int, out: list) -> None:
        tcp = packet.tcp if self.chance > 0 else None
        if tcp is None or tcp.rst or not self.hit(self.chance):
            out.append(packet)
            return
        back = tcp_reset(packet)
        reset_onward_in_place(packet)
        out.append(packet)
        out.append(back)
        self.counters["reset"] += 1
        self.counters["modified"] += 1
        self.counters["injected"] += 1

    def pass_matched(self, packets, now_ns: int) -> bool:
        return self.chance <= 0
