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

import bisect
import collections
import itertools
from typing import NamedTuple

_MOD = 1 << 32
_HALF = 1 << 31
MAX_CONNECTIONS = 4096
_KEEP = 1 << 30      # TCP's largest window: no byte further back is sent or acknowledged again


class Edit(NamedTuple):
    seq: int            # the segment's first sequence number, as the sender numbered it
    length: int         # its payload length before the edit
    delta: int          # bytes added (negative: removed)
    new_end: int        # the sequence number after it, as the receiver numbers it
    payload: bytes | None = None    # the bytes sent in its place, when a retransmission is to get them too


class Flow:
    """One direction of a connection: the edits made to it.

    Each query costs O(log E) in the E edits kept: the edits are kept in stream order
    (offsets from the connection's first edit, unwrapped) with the running sum of their
    deltas, and again in the order of where they end in the receiver's numbering. A
    number is placed in that order relative to the furthest edit, so anything within
    2^31 of it is placed right across the wrap at 2^32. Edits more than _KEEP bytes
    behind the furthest one, further back than any TCP window reaches, are folded into
    one constant shift; so a connection longer than 2^31 bytes stays right, and the
    edits kept stay bounded. Recording an edit costs O(log E) too when it lies past the
    others, as edits of a stream passing through do; one behind later edits (a segment
    edited only when sent again) moves the running sums after it, O(E).
    """

    __slots__ = ("_offsets", "_edits", "_end_offsets", "_sums", "_end_sums", "_by_seq",
                 "_folded", "_floor", "_front", "_front_seq", "_end_front", "_end_front_seq", "_longest")

    def __init__(self):
        self._offsets: list[int] = []       # each kept edit's seq, unwrapped, ascending
        self._edits: list[tuple[Edit, int]] = []    # (edit, its new_end unwrapped), in that order
        self._sums: list[int] = [0]         # _sums[i]: the deltas of _edits[:i]
        self._end_offsets: list[int] = []   # the kept edits' new_end, unwrapped, ascending
        self._end_sums: list[int] = [0]     # _end_sums[i]: the deltas of the first i in that order
        self._by_seq: dict[int, Edit] = {}
        self._folded = 0                    # the deltas of the edits folded away
        self._floor = 0                     # no kept edit starts before it (but ones recorded late)
        self._front = self._front_seq = 0   # the furthest edit's offset and seq
        self._end_front = self._end_front_seq = 0   # the furthest new_end, unwrapped and as numbered
        self._longest = 0                   # the longest kept edit's length

    def __len__(self) -> int:
        """The edits kept (those folded away are not counted)."""
        return len(self._edits)

    def _offset(self, seq: int) -> int:
        return self._front + (seq - self._front_seq + _HALF) % _MOD - _HALF

    def _end_offset(self, number: int) -> int:
        return self._end_front + (number - self._end_front_seq + _HALF) % _MOD - _HALF

    def shift_at(self, seq: int) -> int:
        """How far the byte numbered `seq` by the sender has moved.

        Bytes inserted where the sender had none (an edit of an empty segment)
        come before the sender's byte of that number.
        """
        if not self._edits:
            return self._folded
        offset = self._offset(seq)
        i = bisect.bisect_left(self._offsets, offset)
        if i < len(self._offsets) and self._offsets[i] == offset and self._edits[i][0].length == 0:
            i += 1
        return self._folded + self._sums[i]

    def find(self, seq: int) -> Edit | None:
        return self._by_seq.get(seq)

    def record(self, seq: int, length: int, delta: int, payload: bytes | None = None) -> None:
        """Keep an edit of the segment at `seq`; one already kept for `seq` stays as it is."""
        if seq in self._by_seq:
            return
        new_end = (seq + self.shift_at(seq) + length + delta) % _MOD
        edit = Edit(seq, length, delta, new_end, payload)
        if not self._edits:
            self._front_seq = self._end_front_seq = seq
        offset, end = self._offset(seq), self._end_offset(new_end)
        i = bisect.bisect_right(self._offsets, offset)
        self._offsets.insert(i, offset)
        self._edits.insert(i, (edit, end))
        _insert_sum(self._sums, i, delta)
        j = bisect.bisect_right(self._end_offsets, end)
        self._end_offsets.insert(j, end)
        _insert_sum(self._end_sums, j, delta)
        self._by_seq[seq] = edit
        self._longest = max(self._longest, length)
        if offset > self._front:
            self._front, self._front_seq = offset, seq
        if end > self._end_front:
            self._end_front, self._end_front_seq = end, new_end
        if self._front - self._floor > _KEEP + _KEEP // 2:
            self._fold(self._front - _KEEP)

    def _fold(self, floor: int) -> None:
        """Fold the edits that start before `floor` into the constant shift."""
        cut = bisect.bisect_left(self._offsets, floor)
        self._folded += self._sums[cut]
        for edit, _ in self._edits[:cut]:
            del self._by_seq[edit.seq]
        del self._offsets[:cut], self._edits[:cut]
        self._sums = list(itertools.accumulate((edit.delta for edit, _ in self._edits), initial=0))
        by_end = sorted(self._edits, key=lambda kept: kept[1])
        self._end_offsets = [end for _, end in by_end]
        self._end_sums = list(itertools.accumulate((edit.delta for edit, _ in by_end), initial=0))
        self._longest = max((edit.length for edit, _ in self._edits), default=0)
        self._floor = floor

    def to_sender(self, ack: int) -> int:
        """The receiver's acknowledgement number in the sender's numbering."""
        if not self._edits:
            return (ack - self._folded) % _MOD
        i = bisect.bisect_right(self._end_offsets, self._end_offset(ack))
        return (ack - self._folded - self._end_sums[i]) % _MOD

    def redo(self, seq: int, payload: bytes) -> tuple[bool, bytes]:
        """(whether the segment overlaps an edited one, its payload with the edits it covers made again)."""
        if not self._edits:
            return False, payload
        start = self._offset(seq)
        first = bisect.bisect_right(self._offsets, start - self._longest)
        last = bisect.bisect_left(self._offsets, start + len(payload))
        overlaps = False
        # Last first, so that splicing one edit leaves the offsets of the earlier ones in place.
        for i in range(last - 1, first - 1, -1):
            edit = self._edits[i][0]
            offset = self._offsets[i] - start
            if not edit.length or offset + edit.length <= 0:
                continue
            overlaps = True
            # Only a segment holding the whole edited range can carry its new bytes; any other
            # overlap goes as the sender made it, and the receiver keeps what it already has.
            if edit.payload is not None and offset >= 0 and offset + edit.length <= len(payload):
                payload = payload[:offset] + edit.payload + payload[offset + edit.length:]
        return overlaps, payload


def _insert_sum(sums: list[int], i: int, delta: int) -> None:
    """Running sums `sums` with `delta` put in at position i."""
    sums.insert(i + 1, sums[i] + delta)
    if i + 2 < len(sums):
        # An edit recorded out of stream order: the later sums move.
        sums[i + 2:] = [total + delta for total in sums[i + 2:]]


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
        if forward:
            seq = (original_seq + forward.shift_at(original_seq)) % _MOD
            if seq != tcp.seq_num:
                tcp.seq_num = seq
                changed = True
        backward = self._flows.get(self.reverse(key))
        if backward:
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
        if not flow or not payload:
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
