"""A capture store saved to pcapng and read back as it was.

Each packet's comment carries what the file format has no field for: its
verdict ("passed", "modified", ...), for a modified packet the bytes it was
captured with ("modified; original bytes: 4500..."), and the local process
it belonged to ("passed; process: curl (4242), user alice"). Wireshark shows
the comment as it is; reading the file back restores the verdict, the
original bytes, the process and the recorded times. FLOW, SOCKET and
REFLECT events go in Custom Blocks, one per event (docs/capture-files.md has
their layout).
"""

from __future__ import annotations

import json
import os
import struct
from typing import Iterable, NamedTuple, Sequence

from divertgui.engine import pcapng
from divertgui.engine.header_fields import ip_version
from divertgui.engine.pcapng import is_malformed
from divertgui.engine.address import Address, Layer
from divertgui.engine.errors import CaptureFileError, EventRecordError
from divertgui.engine.event_records import EventRecord, from_json
from divertgui.engine.interface_names import InterfaceNames
from divertgui.engine.processes import Process
from divertgui.engine.store import CaptureStore
from divertgui.engine.store_record import Verdict

ORIGINAL_BYTES = "original bytes: "
EVENT_MAGIC = b"DGE1"          # a custom block holding one event record, layout version 1
_EVENT_LENGTH = struct.Struct("<I")
# Last in a comment: a process's name may hold any character.
PROCESS = "; process: "
USER = ", user "
LOAD_BATCH = 4096
# A file written by another program says nothing of verdicts: its packets were observed.
UNRECORDED_VERDICT = Verdict.SNIFFED


def packet_comment(verdict: Verdict, original: bytes | None, process: Process | None = None) -> str:
    """The comment saved with a packet: its verdict, its captured bytes when it was modified,
    and its local process when it had one."""
    text = Verdict(verdict).name.lower()
    if verdict == Verdict.MODIFIED and original is not None:
        text += f"; {ORIGINAL_BYTES}{original.hex()}"
    if process is not None:
        text += f"{PROCESS}{process.name} ({process.pid}){USER}{process.user}"
    return text


def read_comment(comment: str | None) -> tuple[Verdict, bytes | None, Process | None]:
    """(verdict, original bytes or None, process or None) from a packet comment; what a comment
    does not say is UNRECORDED_VERDICT with no original and no process."""
    if not comment:
        return UNRECORDED_VERDICT, None, None
    comment, _, process_text = comment.partition(PROCESS)
    parts = [part.strip() for part in comment.split(";")]
    verdict = Verdict.__members__.get(parts[0].upper(), UNRECORDED_VERDICT)
    original = None
    for part in parts[1:]:
        if part.startswith(ORIGINAL_BYTES):
            try:
                original = bytes.fromhex(part[len(ORIGINAL_BYTES):])
            except ValueError:
                original = None
    return verdict, original if verdict == Verdict.MODIFIED else None, _read_process(process_text)


def _read_process(text: str) -> Process | None:
    """A process as packet_comment wrote it ("name (pid), user name"); None when it is not one."""
    named, _, user = text.rpartition(USER)
    name, _, pid = named.rpartition(" (")
    if not pid.endswith(")") or not pid[:-1].isdigit() or not 0 < int(pid[:-1]) < 1 << 32:
        return None
    return Process(int(pid[:-1]), name, user)


def event_block(record: EventRecord) -> bytes:
    """A custom block's data for one event: EVENT_MAGIC, the JSON's length (32 bits, little-endian), the JSON."""
    text = json.dumps(record.to_json(), separators=(",", ":")).encode()
    return EVENT_MAGIC + _EVENT_LENGTH.pack(len(text)) + text


def read_event_block(data: bytes, where: str) -> EventRecord | None:
    """The event a custom block holds; None for a block of ours that holds something else."""
    if not data.startswith(EVENT_MAGIC):
        return None
    if len(data) < 8:
        raise EventRecordError(f"{where} is cut short")
    length = _EVENT_LENGTH.unpack_from(data, 4)[0]
    if 8 + length > len(data):
        raise EventRecordError(f"{where} says its record has {length} bytes, but the block holds {len(data) - 8}")
    try:
        value = json.loads(data[8:8 + length])
    except (UnicodeDecodeError, ValueError) as exc:
        raise EventRecordError(f"{where} is not JSON: {exc}") from None
    return from_json(value, where)


def save_rows(store: CaptureStore, path: str | os.PathLike, rows: Iterable[int],
              events: Iterable[EventRecord] = ()) -> int:
    """Writes the store's `rows`, then `events`, to a new pcapng file with their recorded times
    and their interfaces' names where they were captured; returns how many packets."""

    count = len(store)
    wall_ns = store.column("wall_ns", 0, count)
    verdicts = store.column("verdict", 0, count)
    processes = store.column("process", 0, count)

    def records():
        for row in rows:
            comment = packet_comment(Verdict(int(verdicts[row])), store.original(row),
                                     store.processes.get(int(processes[row])))
            yield store.raw(row), store.address(row), int(wall_ns[row]), comment, store.interface_name(row)

    return pcapng.write_capture(path, records(), custom=map(event_block, events))


class Loaded(NamedTuple):
    count: int                  # packets put in the store
    malformed: int              # of them, records that are not an IPv4 or IPv6 packet
    skipped: dict               # records that are not IP at all (ARP, ...), by reason
    error: CaptureFileError | None   # where the file broke; the packets before it are loaded
    events: Sequence[EventRecord] = ()   # the FLOW, SOCKET and REFLECT events, in file order
    bad_events: Sequence[str] = ()       # why each event block that could not be read was left out


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
    except CaptureFileError as exc:
        error = exc
    finally:
        reader.close()
    malformed += _append(store, batch)
    count += len(batch)
    events, bad_events = [], []
    for number, data in enumerate(reader.custom, 1):
        try:
            record = read_event_block(data, f"event block {number}")
        except EventRecordError as exc:
            bad_events.append(str(exc))
            continue
        if record is not None:
            events.append(record)
    return Loaded(count, malformed, dict(reader.skipped), error, events, bad_events)


def _append(store: CaptureStore, records: list[pcapng.CaptureRecord]) -> int:
    if not records:
        return 0
    decoded = [read_comment(record.comment) for record in records]
    # The captured bytes go into the store first; the bytes sent become the row's edit.
    captured = [original if original is not None else record.raw
                for record, (_, original, _) in zip(records, decoded)]
    addresses = [Address(outbound=bool(record.outbound), direction_known=record.outbound is not None,
                         loopback=bool(record.loopback),
                         ipv6=ip_version(record.raw) == 6,
                         if_idx=record.if_idx, timestamp=record.timestamp_ns, layer=Layer.NETWORK,
                         sniffed=verdict == Verdict.SNIFFED)
                 for record, (verdict, _, _) in zip(records, decoded)]
    processes = [store.processes.intern(process) if process is not None else 0 for _, _, process in decoded]
    names = InterfaceNames()
    for if_idx, name in {(record.if_idx, record.interface_name) for record in records}:
        names.learn({if_idx: name})
    store.name_interfaces({address.if_idx: name for address in addresses
                           if (name := names.name(address.if_idx))})
    rows = store.append_batch(captured, addresses, [int(verdict) for verdict, _, _ in decoded],
                              [record.timestamp_ns for record in records], processes)
    for row, record, (_, original, _) in zip(rows, records, decoded):
        if original is not None:
            store.set_edited(row, record.raw)
    return sum(is_malformed(record.raw) for record in records)
