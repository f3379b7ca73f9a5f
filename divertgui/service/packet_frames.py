"""Binary frames for the store's rows: per packet the fields the capture store
cannot compute from the bytes (times, interface, address flags, verdict),
then the bytes of the whole batch in one piece. No per-packet JSON.

    PACKETS  count (u32) + count * ROW + the packets' bytes, joined
    VERDICTS count (u32) + count * (row u64, verdict u8)
    EDIT     row (u64) + the bytes that were sent
    CLEAR    (empty) the store was emptied
"""

from __future__ import annotations

import struct

import numpy as np

from divertgui.engine.store_record import Verdict

ROW = np.dtype([
    ("wall_ns", "<i8"),
    ("timestamp", "<i8"),
    ("length", "<u4"),
    ("if_idx", "<u4"),
    ("sub_if_idx", "<u4"),
    ("flags", "<u2"),
    ("verdict", "u1"),
    ("pad", "u1"),
    ("process", "<u2"),      # the service's process index; a "processes" event names each first
])
VERDICT_ROW = np.dtype([("row", "<u8"), ("verdict", "u1")])
COUNT = struct.Struct("<I")
EDIT_ROW = struct.Struct("<Q")
VERDICTS = frozenset(int(v) for v in Verdict)


def encode_packets(rows: np.ndarray, blob: bytes) -> bytes:
    return COUNT.pack(len(rows)) + rows.tobytes() + blob


def decode_packets(body: bytes) -> tuple[np.ndarray, bytes]:
    """(rows, blob) of a PACKETS frame; ValueError when the parts do not add up."""
    if len(body) < COUNT.size:
        raise ValueError("a packets frame is shorter than its count")
    (count,) = COUNT.unpack_from(body)
    end = COUNT.size + count * ROW.itemsize
    if end > len(body):
        raise ValueError(f"a packets frame announces {count} packets but holds fewer rows")
    rows = np.frombuffer(body, ROW, count, COUNT.size)
    # No bound per packet beyond the frame's own: a rule that grows a TCP
    # segment keeps it whole in the store, longer than IP's length field,
    # and sends it split (engine/tcp_split.py).
    lengths = rows["length"].astype(np.int64)
    if int(lengths.sum()) != len(body) - end:
        raise ValueError(f"a packets frame's lengths add up to {int(lengths.sum())} bytes "
                         f"but it holds {len(body) - end}")
    if not np.isin(rows["verdict"], list(VERDICTS)).all():
        raise ValueError("a packets frame has an unknown verdict")
    return rows, body[end:]


def encode_verdicts(changes: list[tuple[int, int]]) -> bytes:
    rows = np.array(changes, VERDICT_ROW) if changes else np.zeros(0, VERDICT_ROW)
    return COUNT.pack(len(rows)) + rows.tobytes()


def decode_verdicts(body: bytes) -> np.ndarray:
    if len(body) < COUNT.size:
        raise ValueError("a verdicts frame is shorter than its count")
    (count,) = COUNT.unpack_from(body)
    if COUNT.size + count * VERDICT_ROW.itemsize != len(body):
        raise ValueError(f"a verdicts frame announces {count} changes but holds {len(body) - COUNT.size} bytes")
    changes = np.frombuffer(body, VERDICT_ROW, count, COUNT.size)
    if not np.isin(changes["verdict"], list(VERDICTS)).all():
        raise ValueError("a verdicts frame has an unknown verdict")
    return changes


def encode_edit(row: int, raw: bytes) -> bytes:
    return EDIT_ROW.pack(row) + raw


def decode_edit(body: bytes) -> tuple[int, bytes]:
    if len(body) < EDIT_ROW.size:
        raise ValueError("an edit frame is shorter than its row number")
    return EDIT_ROW.unpack_from(body)[0], body[EDIT_ROW.size:]
