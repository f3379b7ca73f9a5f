"""Flow against straightforward references on generated edit sequences: the plain scan over
every edit (as Flow was first written) near the wrap at 2^32, and a count over unwrapped
stream positions for connections longer than 2^32 bytes."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from divertgui.engine.rules.seq_adjust import Edit, Flow

MOD = 1 << 32
HALF = 1 << 31


def before(a: int, b: int) -> bool:
    return 0 < (b - a) % MOD < HALF


def at_or_after(a: int, b: int) -> bool:
    return (a - b) % MOD < HALF


class ScanFlow:
    """Every query a scan over every edit."""

    def __init__(self):
        self.edits: list[Edit] = []

    def shift_at(self, seq):
        return sum(e.delta for e in self.edits if before(e.seq, seq) or (e.length == 0 and e.seq == seq))

    def find(self, seq):
        return next((edit for edit in self.edits if edit.seq == seq), None)

    def record(self, seq, length, delta, payload=None):
        new_end = (seq + self.shift_at(seq) + length + delta) % MOD
        self.edits.append(Edit(seq, length, delta, new_end, payload))

    def to_sender(self, ack):
        return (ack - sum(e.delta for e in self.edits if at_or_after(ack, e.new_end))) % MOD

    def redo(self, seq, payload):
        end = (seq + len(payload)) % MOD
        overlaps = False
        for edit in sorted(self.edits, key=lambda e: (e.seq - seq) % MOD, reverse=True):
            if not edit.length or not (before(edit.seq, end) and before(seq, (edit.seq + edit.length) % MOD)):
                continue
            overlaps = True
            offset = (edit.seq - seq) % MOD
            if edit.payload is not None and at_or_after(edit.seq, seq) and offset + edit.length <= len(payload):
                payload = payload[:offset] + edit.payload + payload[offset + edit.length:]
        return overlaps, payload


def data(length: int, salt: int = 0) -> bytes:
    return bytes((i * 7 + salt) % 251 for i in range(length))


# Each step: how the segment's place is chosen, a distance, its length, its edited length,
# whether the edit keeps its bytes for retransmissions.
STEPS = st.lists(st.tuples(st.sampled_from(["next", "gap", "back", "empty", "far"]),
                           st.integers(0, 3000), st.integers(0, 1500), st.integers(0, 1500), st.booleans()),
                 min_size=1, max_size=25)
START = st.one_of(st.integers(MOD - 4000, MOD - 1), st.integers(0, 4000), st.integers(0, MOD - 1))


@settings(max_examples=150, deadline=None)
@given(start=START, steps=STEPS, probes=st.lists(st.integers(-6000, 60000), max_size=12),
       spans=st.lists(st.tuples(st.integers(-3000, 50000), st.integers(0, 4000)), max_size=6))
def test_flow_answers_as_the_scan_over_every_edit(start, steps, probes, spans):
    flow, scan = Flow(), ScanFlow()
    cursor = 0
    for i, (how, distance, length, new_length, keep) in enumerate(steps):
        if how == "next":
            at = cursor
        elif how == "gap":
            at = cursor + distance
        elif how == "back":           # a retransmission, or a segment edited after later ones
            at = cursor - distance
        elif how == "far":            # far along the stream, still well within one window
            at = cursor + distance * 100_000
            probes = probes + [at, at - 1, at + length]
        else:                         # bytes put into an empty segment
            at, length = cursor + distance % 3, 0
        seq = (start + at) % MOD
        payload = data(new_length, i) if keep else None
        # As SeqAdjuster does: the first edit of a segment is the one kept.
        if scan.find(seq) is None:
            scan.record(seq, length, new_length - length, payload)
        flow.record(seq, length, new_length - length, payload)
        cursor = max(cursor, at + length)
        assert flow.find(seq) == scan.find(seq)
        assert len(flow) == len(scan.edits)

        points = {(start + p) % MOD for p in probes}
        for edit in scan.edits:
            points |= {(edit.seq + d) % MOD for d in (-1, 0, 1, edit.length - 1, edit.length, edit.length + 1)}
        for seq in points:
            assert flow.shift_at(seq) == scan.shift_at(seq), seq
            assert flow.find(seq) == scan.find(seq)
        acks = {(edit.new_end + d) % MOD for edit in scan.edits for d in (-1, 0, 1)} | points
        for ack in acks:
            assert flow.to_sender(ack) == scan.to_sender(ack), ack
        # SACK blocks: each edge mapped on its own.
        for left, right in zip(sorted(acks), sorted(acks)[1:]):
            assert (flow.to_sender(left), flow.to_sender(right)) == (scan.to_sender(left), scan.to_sender(right))

        segments = [((start + p) % MOD, n) for p, n in spans]
        for edit in scan.edits:   # retransmitted alone, collapsed with its neighbours, or in part
            segments += [(edit.seq, edit.length), ((edit.seq - 10) % MOD, edit.length + 30),
                         ((edit.seq + 1) % MOD, max(edit.length - 2, 0))]
        for seq, n in segments:
            sent = data(n, seq % 13)
            assert flow.redo(seq, sent) == scan.redo(seq, sent), (seq, n)


class UnwrappedFlow:
    """The truth for any length of connection: stream positions that never wrap."""

    def __init__(self):
        self.edits: list[tuple[int, int, int, int]] = []    # (start, length, delta, new end)

    def shift_at(self, position):
        return sum(delta for at, length, delta, _ in self.edits if at < position or (length == 0 and at == position))

    def record(self, position, length, delta):
        self.edits.append((position, length, delta, position + self.shift_at(position) + length + delta))

    def to_sender(self, ack):
        return ack - sum(delta for _, _, delta, end in self.edits if end <= ack)


@settings(max_examples=40, deadline=None)
@given(start=START, steps=st.lists(st.tuples(st.integers(1 << 26, 1 << 28), st.integers(0, 1500),
                                             st.integers(0, 1500)), min_size=70, max_size=90),
       behind=st.lists(st.integers(0, 1 << 29), min_size=1, max_size=4))
def test_a_connection_longer_than_2_to_the_32_stays_right(start, steps, behind):
    flow, truth = Flow(), UnwrappedFlow()
    cursor = 0
    for gap, length, new_length in steps:
        at = cursor + gap
        flow.record((start + at) % MOD, length, new_length - length, b"")
        truth.record(at, length, new_length - length)
        cursor = at + length
        # Within a window behind the newest byte, both numberings.
        for position in [cursor, cursor + 1, at, at + length] + [cursor - b for b in behind]:
            shift = truth.shift_at(position)
            assert flow.shift_at((start + position) % MOD) == shift
            ack = position + shift
            assert flow.to_sender((start + ack) % MOD) == (start + truth.to_sender(ack)) % MOD
        retransmitted = (start + at) % MOD
        assert flow.redo(retransmitted, data(length))[0] == bool(length)
    assert cursor > MOD
    # Edits far behind are folded away: the ones kept span about one window.
    assert len(flow) < len(steps)
