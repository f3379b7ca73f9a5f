"""Extended BPF as the kernel's verifier reads it (linux/bpf.h, linux/bpf_common.h):
opcodes, instructions, and an assembler with symbolic jump targets.

An instruction is 8 bytes: opcode, dst and src registers (4 bits each),
a signed 16-bit offset and a signed 32-bit immediate. r0 holds return
values, r1-r5 carry helper arguments (and are clobbered by calls), r6-r9
survive calls, r10 is the read-only frame pointer (the stack grows down
from it, 512 bytes).
"""

from __future__ import annotations

import struct

from divertgui.engine.filter import bpf as classic
from divertgui.engine.filter.bpf import Label

# Instruction classes.
LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64 = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07
# Sizes of memory accesses.
W, H, B, DW = 0x00, 0x08, 0x10, 0x18
# Modes.
IMM, MEM = 0x00, 0x60
# ALU operations.
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR, MOV, ARSH, END = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0)
# Jump operations (unsigned GT/GE/LT/LE, signed SGT/SGE/SLT/SLE).
JA, JEQ, JGT, JGE, JSET, JNE, JSGT, JSGE, CALL, EXIT, JLT, JLE, JSLT, JSLE = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0)
K, X = 0x00, 0x08           # operand: the immediate, or the source register
TO_BE = 0x08                # with END: convert to big-endian (a byte swap on little-endian hosts)
PSEUDO_MAP_FD = 1           # src of a 64-bit immediate load: the immediate is a map's descriptor

R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)

# Helper functions (enum bpf_func_id).
KTIME_GET_NS = 5
GET_CURRENT_PID_TGID = 14
GET_CURRENT_COMM = 16
SKB_LOAD_BYTES = 26
GET_SOCKET_COOKIE = 46
SK_FULLSOCK = 95
RINGBUF_OUTPUT = 130

# A comparison of the filter language as (unsigned jump, signed jump).
COMPARISONS = {"==": (JEQ, JEQ), "!=": (JNE, JNE), "<": (JLT, JSLT), "<=": (JLE, JSLE),
               ">": (JGT, JSGT), ">=": (JGE, JSGE)}


def _pack(code: int, dst: int = 0, src: int = 0, offset: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, offset, imm)


class Assembler(classic.Assembler):
    """Instructions with symbolic jump targets (labels as in classic BPF's assembler);
    `assemble()` resolves them to bytes."""

    def emit(self, code: int, dst: int = 0, src: int = 0, offset: int = 0, imm: int = 0) -> None:
        self.items.append((code, dst, src, offset, imm, None))

    # -- the instructions the programs use, named for what they do -----------------

    def mov(self, dst: int, src: int) -> None:
        """dst = src (64-bit)."""
        self.emit(ALU64 | MOV | X, dst, src)

    def mov_imm(self, dst: int, imm: int) -> None:
        """dst = imm (sign-extended from 32 bits)."""
        self.emit(ALU64 | MOV | K, dst, imm=imm)

    def load_imm64(self, dst: int, value: int, src: int = 0) -> None:
        """dst = a 64-bit constant (two instruction slots)."""
        value &= (1 << 64) - 1
        low, high = value & 0xFFFFFFFF, value >> 32
        self.items.append((LD | DW | IMM, dst, src, 0, struct.unpack("<i", struct.pack("<I", low))[0], None))
        self.items.append((0, 0, 0, 0, struct.unpack("<i", struct.pack("<I", high))[0], None))

    def load_map(self, dst: int, map_fd: int) -> None:
        """dst = the map whose descriptor is map_fd (the kernel substitutes its address)."""
        self.load_imm64(dst, map_fd, src=PSEUDO_MAP_FD)

    def alu_imm(self, op: int, dst: int, imm: int) -> None:
        """dst = dst op imm (64-bit)."""
        self.emit(ALU64 | op | K, dst, imm=imm)

    def swap(self, dst: int, bits: int) -> None:
        """Network to host order of the low `bits` bits of dst (upper bits cleared)."""
        self.emit(ALU | END | TO_BE, dst, imm=bits)

    def load(self, size: int, dst: int, base: int, offset: int) -> None:
        """dst = *(size *)(base + offset)."""
        self.emit(LDX | MEM | size, dst, base, offset)

    def store(self, size: int, base: int, offset: int, src: int) -> None:
        """*(size *)(base + offset) = src."""
        self.emit(STX | MEM | size, base, src, offset)

    def store_imm(self, size: int, base: int, offset: int, imm: int) -> None:
        """*(size *)(base + offset) = imm."""
        self.emit(ST | MEM | size, base, 0, offset, imm)

    def call(self, helper: int) -> None:
        """r0 = helper(r1, ..., r5); r1-r5 are clobbered."""
        self.emit(JMP | CALL, imm=helper)

    def exit(self) -> None:
        """Return r0."""
        self.emit(JMP | EXIT)

    def goto(self, target: Label) -> None:
        self.items.append((JMP | JA, 0, 0, 0, 0, target))

    def jump_imm(self, op: int, dst: int, imm: int, target: Label) -> None:
        """if dst op imm (64-bit, imm sign-extended) goto target."""
        self.items.append((JMP | op | K, dst, 0, 0, imm, target))

    def jump_reg(self, op: int, dst: int, src: int, target: Label) -> None:
        """if dst op src (64-bit) goto target."""
        self.items.append((JMP | op | X, dst, src, 0, 0, target))

    def assemble(self) -> bytes:
        where = classic.label_positions(self.items)
        out, position = [], 0
        for item in self.items:
            if isinstance(item, Label):
                continue
            code, dst, src, offset, imm, target = item
            if target is not None:
                offset = where[target] - position - 1
                if not -0x8000 <= offset <= 0x7FFF:
                    raise OverflowError("jump beyond eBPF's 16-bit offset")
            out.append(_pack(code, dst, src, offset, imm))
            position += 1
        return b"".join(out)
