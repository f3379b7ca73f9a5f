"""Sequence and acknowledgement numbers of TCP connections whose segments changed length.

When a segment's payload grows or shrinks by d bytes, every later byte of
that direction sits d further along the stream the receiver sees. This
keeps, per direction of each connection, the edits made (where in the
sender's original numbering, by how much), then maps the sender's sequence
numbers into the receiver's numbering and the receiver's acknowledgements
(and SACK blocks) back into the sender's, for the rest of the connection.
An edit that keeps the bytes sent in its place also gives them again to a
retransmission of the edited segment, which the sender still numbers and
fills as before the edit.
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
    payload: bytes | None = None    # the bytes sent in its place, when a retransmission is to get them too


class Flow:
    """One direction of a connection: the edits made to it."""

    __slots__ = ("edits",)

    def __init__(self):
        self.edits: list[Edit] = []

    def shift_at(self, seq: int) -> int:
        """How far the byte numbered `seq` by the sender has moved.

        Bytes inserted where the sender had none (an edit of an empty segment)
        come before the sender's byte of that number.
        """
        return sum(e.delta for e in self.edits if _before(e.seq, seq) or (e.length == 0 and e.seq == seq))

    def find(self, seq: int) -> Edit | None:
        for edit in self.edits:
            if edit.seq == seq:
                return edit
        return None

    def record(self, seq: int, length: int, delta: int, payload: bytes | None = None) -> None:
        new_end = (seq + self.shift_at(seq) + length + delta) % _MOD
        self.edits.append(Edit(seq, length, delta, new_end, payload))

    def to_sender(self, ack: int) -> int:
        """The receiver's acknowledgement number in the sender's numbering."""
        return (ack - sum(e.delta for e in self.edits if _at_or_after(ack, e.new_end))) % _MOD

    def redo(self, seq: int, payload: bytes) -> tuple[bool, bytes]:
        """(whether the segment overlaps an edited one, its payload with the edits it covers made again)."""
        end = (seq + len(payload)) % _MOD
        overlaps = False
        # Last first, so that splicing one edit leaves the offsets of the earlier ones in place.
        for edit in sorted(self.edits, key=lambda e: (e.seq - seq) % _MOD, reverse=True):
            if not edit.length or not (_before(edit.seq, end) and _before(seq, (edit.seq + edit.length) % _MOD)):
                continue
            overlaps = True
            offset = (edit.seq - seq) % _MOD
            # Only a segment holding the whole edited range can carry its new bytes; any other
            # overlap goes as the sender made it, and the receiver keeps what it already has.
            if edit.payload is not None and _at_or_after(edit.seq, seq) and offset + edit.length <= len(payload):
                payload = payload[:offset] + edit.payload + payload[offset + edit.length:]
        return overlaps, payload


class SeqAdjuster:
    """Connections keyed by (source, source port, destination, destination port) of each direction."""

    def __init__(self, max_connections: int = MAX_CONNECTIONS):
        self._flows: collections.OrderedDict = collections.OrderedDict()
        self.max_connections = max_connections

    def __bool__(self) -> bool:
        return bool(self._flows)

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

    def record(self, key: tuple, seq: int, length: int, delta: int, payload: bytes | None = None) -> None:
        flow = self._flows.get(key)
        if flow is None:
            flow = self._flows[key] = Flow()
            if self.reverse(key) not in self._flows:
                self._flows[self.reverse(key)] = Flow()
            while len(self._flows) > self.max_connections * 2:
                self._flows.popitem(last=False)
        if flow.find(seq) is None:
            flow.record(seq, length, delta, payload)
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

    # -- whole packets: an edit made by hand, and the packets after it -------------------

    def record_edit(self, original, edited) -> bool:
        """Keep the edit that turned TCP segment `original` into `edited` (Packets), for the rest
        of its connection; False when there is nothing to keep (not TCP, no payload either way,
        or the edit moved the segment to another connection)."""
        if original.tcp is None or edited.tcp is None:
            return False
        key = self.key(original)
        old, new = original.payload or b"", edited.payload or b""
        if self.key(edited) != key or not (old or new):
            return False
        self.record(key, original.tcp.seq_num, len(old), len(new) - len(old), new)
        return True

    def resend(self, packet) -> bool:
        """Give a retransmission of an edited segment the edited bytes again (checksums fixed);
        True when the packet overlaps an edited segment, whether or not it could be redone."""
        tcp = packet.tcp
        if tcp is None:
            return False
        flow = self._flows.get(self.key(packet))
        payload = packet.payload
        if flow is None or not flow.edits or not payload:
            return False
        overlaps, redone = flow.redo(tcp.seq_num, payload)
        if redone != payload:
            packet.payload = redone
            packet.recalculate_checksums()
        return overlaps

    def renumber(self, packet) -> bool:
        """Move a packet of an edited connection into the numbering its receiver sees
        (checksums fixed); True when it changed."""
        tcp = packet.tcp
        if tcp is None:
            return False
        key = self.key(packet)
        if not self.tracked(key) or not self.adjust(packet, key, tcp.seq_num):
            return False
        packet.recalculate_checksums()
        return True
