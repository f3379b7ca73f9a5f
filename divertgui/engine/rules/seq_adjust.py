"""Sequence and acknowledgement numbers of TCP connections whose segments changed length.

When a segment's payload grows or shrinks by d bytes, every later byte of
that direction sits d further along the stream the receiver sees. This
keeps, per direction of each connection, the edits made (where in the
sender's original numbering, by how much), then maps the sender's sequence
numbers into the receiver's numbering and the receiver's acknowledgements
(and SACK blocks) back into the sender's, for the rest of the connection.
"""

from __future__ import annotations

import collections
from typing import NamedTuple

_MOD = 1 << 32
_HALF = 1 << 31
MAX_CONNECTIONS = 4096


def _before(a: int, b: int) -> bool:
    """a < b in sequence-number arithmetic."""
    return 0 < (b - a) % _MOD < _HALF


def _at_or_after(a: int, b: int) -> bool:
    return (a - b) % _MOD < _HALF


class Edit(NamedTuple):
    seq: int            # the segment's first sequence number, as the sender numbered it
    length: int         # its payload length before the edit
    delta: int          # bytes added (negative: removed)
    new_end: int        # the sequence number after it, as the receiver numbers it


class Flow:
    """One direction of a connection: the edits made to it."""

    __slots__ = ("edits",)

    def __init__(self):
        self.edits: list[Edit] = []

    def shift_at(self, seq: int) -> int:
        """How far the byte numbered `seq` by the sender has moved."""
        return sum(e.delta for e in self.edits if _before(e.seq, seq))

    def find(self, seq: int) -> Edit | None:
        for edit in self.edits:
            if edit.seq == seq:
                return edit
        return None

    def record(self, seq: int, length: int, delta: int) -> None:
        new_end = (seq + self.shift_at(seq) + length + delta) % _MOD
        self.edits.append(Edit(seq, length, delta, new_end))

    def to_sender(self, ack: int) -> int:
        """The receiver's acknowledgement number in the sender's numbering."""
        return (ack - sum(e.delta for e in self.edits if _at_or_after(ack, e.new_end))) % _MOD


class SeqAdjuster:
    """Connections keyed by (source, source port, destination, destination port) of each direction."""

    def __init__(self, max_connections: int = MAX_CONNECTIONS):
        self._flows: collections.OrderedDict = collections.OrderedDict()
        self.max_connections = max_connections

    @staticmethod
    def key(packet) -> tuple:
        tcp = packet.tcp
        return packet.src_addr, tcp.src_port, packet.dst_addr, tcp.dst_port

    @staticmethod
    def reverse(key: tuple) -> tuple:
        return key[2], key[3], key[0], key[1]

    def tracked(self, key: tuple) -> bool:
        return key in self._flows or self.reverse(key) in self._flows

    def edited(self, key: tuple, seq: int) -> Edit | None:
        flow = self._flows.get(key)
        return flow.find(seq) if flow is not None else None

    def record(self, key: tuple, seq: int, length: int, delta: int) -> None:
        flow = self._flows.get(key)
        if flow is None:
            flow = self._flows[key] = Flow()
            if self.reverse(key) not in self._flows:
                self._flows[self.reverse(key)] = Flow()
            while len(self._flows) > self.max_connections * 2:
                self._flows.popitem(last=False)
        if flow.find(seq) is None:
            flow.record(seq, length, delta)
        self._flows.move_to_end(key)

    def forget(self, key: tuple) -> None:
        self._flows.pop(key, None)
        self._flows.pop(self.reverse(key), None)

    def adjust(self, packet, key: tuple, original_seq: int) -> bool:
        """Rewrite the packet's seq (from `original_seq`), ack and SACK blocks; True when anything changed."""
        tcp = packet.tcp
        changed = False
        forward = self._flows.get(key)
        if forward is not None and forward.edits:
            seq = (original_seq + forward.shift_at(original_seq)) % _MOD
            if seq != tcp.seq_num:
                tcp.seq_num = seq
                changed = True
        backward = self._flows.get(self.reverse(key))
        if backward is not None and backward.edits:
            if tcp.ack:
                ack = backward.to_sender(tcp.ack_num)
                if ack != tcp.ack_num:
                    tcp.ack_num = ack
                    changed = True
            blocks = tcp.sack
            if blocks:
                mapped = [(backward.to_sender(left), backward.to_sender(right)) for left, right in blocks]
                if mapped != blocks:
                    tcp.sack = mapped
                    changed = True
        return changed
