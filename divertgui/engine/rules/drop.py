"""Drop: lose packets at random, independently or in bursts (Gilbert-Elliott)."""

from __future__ import annotations

from divertgui.engine.rules.base import Param, Rule, chance


class Drop(Rule):
    """model "uniform": each packet is lost with `chance` percent.

    model "gilbert_elliott": a two-state chain moved once per packet; from the
    good state it turns bad with `enter_bad` percent, from the bad state it
    turns good with `leave_bad` percent; a packet is lost with `loss_good`
    percent in the good state and `loss_bad` percent in the bad one.
    """

    kind = "drop"
    params = {
        "chance": chance(10.0),
        "model": Param("uniform", choices=("uniform", "gilbert_elliott")),
        "enter_bad": chance(1.0),
        "leave_bad": chance(25.0),
        "loss_good": chance(0.0),
        "loss_bad": chance(100.0),
    }

    carried = ("bad",)

    def setup(self) -> None:
        self.bad = False

    def _lost(self) -> bool:
        if self.model == "uniform":
            return self.hit(self.chance)
        if self.bad:
            if self.hit(self.leave_bad):
                self.bad = False
        elif self.hit(self.enter_bad):
            self.bad = True
        return self.hit(self.loss_bad if self.bad else self.loss_good)

    def process(self, packet, now_ns: int, out: list) -> None:
        if self._lost():
            self.counters["dropped"] += 1
        else:
            out.append(packet)

    def pass_matched(self, packets, now_ns: int) -> bool:
        return self.model == "uniform" and self.chance <= 0

    def draw_matched(self, packets, now_ns: int) -> list[bool]:
        if self.model != "uniform":
            lost = self._lost
            kept = [not lost() for _ in packets]
        else:
            kept = [not lost for lost in self.hits(self.chance, len(packets))]
        self.counters["dropped"] += kept.count(False)
        return kept
