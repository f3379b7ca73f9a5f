"""Classic BPF as the x_tables bpf match runs it (linux/filter.h): opcodes,
instructions and an assembler with symbolic jump targets."""

from __future__ import annotations

from typing import NamedTuple

MAX_INSTRUCTIONS = 64          # XT_BPF_MAX_NUM_INSTR

# Classic BPF opcodes (linux/filter.h).
LD, LDX, ST, ALU, JMP, RET, MISC = 0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x07
W, H, B = 0x00, 0x08, 0x10
IMM, ABS, IND, MEM, LEN, MSH = 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0
ADD, SUB, OR, AND_, LSH, RSH = 0x00, 0x10, 0x40, 0x50, 0x60, 0x70
JA, JEQ, JGT, JGE, JSET = 0x00, 0x10, 0x20, 0x30, 0x40
K, X = 0x00, 0x08
TAX, TXA = 0x00, 0x80
SKF_AD_MARK = 0xFFFFF000 + 20  # SKF_AD_OFF + SKF_AD_MARK


class Instruction(NamedTuple):
    code: int
    jt: int
    jf: int
    k: int


class Label:
    __slots__ = ()


def label_positions(items: list) -> dict:
    """Each label's instruction index among `items` (instructions and labels, in order)."""
    position, where = 0, {}
    for item in items:
        if isinstance(item, Label):
            where[item] = position
        else:
            position += 1
    return where


class Assembler:
    """Instructions with symbolic jump targets, resolved once all are placed."""

    def __init__(self):
        self.items: list = []

    def label(self) -> Label:
        return Label()

    def place(self, label: Label) -> None:
        self.items.append(label)

    def op(self, code: int, k: int = 0) -> None:
        self.items.append((code, None, None, k))

    def jump(self, code: int, k: int, true: Label, false: Label) -> None:
        self.items.append((code, true, false, k))

    def goto(self, target: Label) -> None:
        self.items.append((JMP | JA, target, None, 0))

    def resolve(self) -> list[Instruction]:
        items = self._without_useless_gotos()
        where = label_positions(items)
        program, position = [], 0
        for item in items:
            if isinstance(item, Label):
                continue
            code, true, false, k = item
            if code == JMP | JA and true is not None:
                program.append(Instruction(code, 0, 0, where[true] - position - 1))
            elif true is not None:
                jt, jf = where[true] - position - 1, where[false] - position - 1
                if not (0 <= jt <= 255 and 0 <= jf <= 255):
                    raise OverflowError("jump out of classic BPF range")
                program.append(Instruction(code, jt, jf, k))
            else:
                program.append(Instruction(code, 0, 0, k))
            position += 1
        return program

    def _without_useless_gotos(self) -> list:
        items = self.items
        kept = []
        for i, item in enumerate(items):
            if not isinstance(item, Label) and item[0] == JMP | JA and item[1] is not None:
                following = i + 1
                while following < len(items) and isinstance(items[following], Label):
                    if items[following] is item[1]:
                        break
                    following += 1
                if following < len(items) and items[following] is item[1]:
                    continue
            kept.append(item)
        return kept

