"""A capture store saved to pcapng and read back as it was.

Each packet's comment carries what the file format has no field for: its
verdict ("passed", "modified", ...) and, for a modified packet, the bytes
it was captured with ("modified; original bytes: 4500..."). Wireshark shows
the comment as it is; reading the file back restores the verdict, the
original bytes and the recorded times.
"""

from __future__ import annotations

import os
from typing import Iterable, NamedTuple

from divertgui.engine import pcapng
from divertgui.engine.pcapng import is_malformed
from divertgui.engine.address import Address, Layer
from divertgui.engine.store import CaptureStore
from divertgui.engine.store_record import Verdict

ORIGINAL_BYTES = "original bytes: "
LOAD_BATCH = 4096
# A file written by another program says nothing of verdicts: its packets were observed.
UNRECORDED_VERDICT = Verdict.SNIFFED


def packet_comment(verdict: Verdict, original: bytes | None) -> str:
    """The comment saved with a packet: its verdict, and its captured bytes when it was modified."""
    name = Verdict(verdict).name.lower()
    if verdict == Verdict.MODIFIED and original is not None:
        return f"{name}; {ORIGINAL_BYTES}{original.hex()}"
    return name


def read_comment(comment: str | None) -> tuple[Verdict, bytes | None]:
    """(verdict, original bytes or None) from a packet comment; what a comment does not say is
    UNRECORDED_VERDICT with no original."""
    if not comment:
        return UNRECORDED_VERDICT, None
    parts = [part.strip() for part in comment.split(";")]
    verdict = Verdict.__members__.get(parts[0].upper(), UNRECORDED_VERDICT)
    original = None
    for part in parts[1:]:
        if part.startswith(ORIGINAL_BYTES):
            try:
                original = bytes.fromhex(part[len(ORIGINAL_BYTES):])
            except ValueError:
                original = None
    return verdict, original if verdict == Verdict.MODIFIED else None


def save_rows(store: CaptureStore, path: str | os.PathLike, rows: Iterable[int]) -> int:
    """Writes the store's `rows` to a new pcapng file with their recorded times; returns how many."""

    count = len(store)
    wall_ns = store.column("wall_ns", 0, count)
    verdicts = store.column("verdict", 0, count)

    def records():
        for row in rows:
            comment = packet_comment(Verdict(int(verdicts[row])), store.original(row))
            yield store.raw(row), store.address(row), int(wall_ns[row]), comment

    return pcapng.write_capture(path, records())


class Loaded(NamedTuple):
    count: int                  # packets put in the store
    malformed: int              # of them, records that are not an IPv4 or IPv6 packet
    skipped: dict               # records that are not IP at all (ARP, ...), by reason
    error: pcapng.CaptureFileError | None   # where the file broke; the packets before it are loaded


def load_into(store: CaptureStore, reader: pcapng.CaptureReader) -> Loaded:
    """Appends the packets of an open capture file to `store`, each with its recorded time,
    direction, verdict and (for a modified packet) original bytes; closes the reader."""
    count = malformed = 0
    error = None
    batch: list[pcapng.CaptureRecord] = []
    try:
        for record in reader:
            batch.append(record)
            if len(batch) >= LOAD_BATCH:
                malformed += _append(store, batch)
                count += len(batch)
                batch = []
    except pcapng.CaptureFileError as exc:
        error = exc
    finally:
        reader.close()
    malformed += _append(store, batch)
    count += len(batch)
    return Loaded(count, malformed, dict(reader.skipped), error)


def _append(store: CaptureStore, records: list[pcapng.CaptureRecord]) -> int:
    if not records:
        return 0
    decoded = [read_comment(record.comment) for record in records]
    # The captured bytes go into the store first; the bytes sent become the row's edit.
    captured = [original if original is not None else record.raw
                for record, (_, original) in zip(records, decoded)]
    addresses = [Address(outbound=bool(record.outbound), loopback=bool(record.loopback),
                         ipv6=not is_malformed(record.raw) and record.raw[0] >> 4 == 6,
                         if_idx=record.if_idx, timestamp=record.timestamp_ns, layer=Layer.NETWORK,
                         sniffed=verdict == Verdict.SNIFFED)
                 for record, (verdict, _) in zip(records, decoded)]
    rows = store.append_batch(captured, addresses, [int(verdict) for verdict, _ in decoded],
                              [record.timestamp_ns for record in records])
    for row, record, (_, original) in zip(rows, records, decoded):
        if original is not None:
            store.set_edited(row, record.raw)
    return sum(is_malformed(record.raw) for record in records)
