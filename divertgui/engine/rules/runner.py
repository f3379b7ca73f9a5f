"""Driving a Divert handle through a rules Pipeline with precise timing.

The loop never sleeps a fixed amount: it waits for packets only until the
pipeline's next deadline, so a held packet leaves within the handle's
wake-up latency of its due time. Under a flood it may wait for a batch to
gather (read_pacing.py), never past that deadline either.
"""

from __future__ import annotations

import time

from divertgui.engine.address import Flag, Param
from divertgui.engine.errors import DivertError, PacketCutError, PacketTooLargeError
from divertgui.engine.handle import MAX_BATCH
from divertgui.engine.packet import Packet
from divertgui.engine.read_pacing import ReadPacing
from divertgui.engine.tcp_split import split_tcp_segment

IDLE_WAIT = 0.05        # seconds; bounds how long a stop request waits to be noticed


def send_out(handle, packets: list, errors: list, failed: list | None = None) -> None:
    """Verdicts for received packets in batches; new packets (copies, RSTs) one by one,
    so that one that cannot be injected costs only itself (and is counted).

    A received TCP segment an edit made too large for one verdict goes out
    split (send_split), in its place among the others; any other received
    packet too large to send (PacketTooLargeError) is dropped, never let
    through unedited, and its error goes to `failed` (to `errors` when
    `failed` is None); the rest of its batch is sent.
    """
    releases, new = [], []
    # IPv4's limit, the smaller of the two versions': only a packet past it may be too large.
    smallest = handle.edited_size_limit(b"\x45")
    for packet in packets:
        if not packet.ticket:
            new.append(packet)
        elif len(packet) > smallest and len(packet) > handle.edited_size_limit(packet.raw):
            _release(handle, releases, errors, failed)
            releases = []
            if not send_split(handle, packet, errors):
                _release(handle, [packet], errors, failed)
        else:
            releases.append(packet)
    _release(handle, releases, errors, failed)
    for packet in new:
        try:
            handle.send(packet)
        except (OSError, PacketTooLargeError) as exc:
            errors.append(str(exc))


def _release(handle, releases: list, errors: list, failed: list | None) -> None:
    if not releases:
        return
    try:
        handle.send_batch(releases)
    except (PacketTooLargeError, PacketCutError):
        # The batch failed whole, before anything was sent: each packet on its own.
        for packet in releases:
            try:
                handle.send(packet)
            except (PacketTooLargeError, PacketCutError) as exc:
                if isinstance(exc, PacketCutError) and _inject_instead(handle, packet, errors):
                    continue
                handle.drop(packet)
                (errors if failed is None else failed).append(str(exc))


def _inject_instead(handle, packet, errors: list) -> bool:
    """The kernel handed over only the first 65531 bytes of TCP segment `packet` (what
    a netlink attribute carries), so its verdict may not carry edited bytes: it is
    dropped and its edited bytes injected in its place, in parts that fit; the sender
    sends again what was never handed over. False, with nothing done, for anything
    but TCP, whose datagrams cannot arrive short."""
    parts = split_tcp_segment(packet.raw, handle.edited_size_limit(packet.raw), cut=True)
    if parts is None:
        return False
    handle.drop(packet)
    _inject(handle, packet, parts, errors)
    return True


def _inject(handle, packet, parts: list, errors: list) -> None:
    for part in parts:
        try:
            handle.send(Packet(part, packet.address.copy()))
        except (OSError, DivertError) as exc:
            errors.append(str(exc))


def send_split(handle, packet, errors: list) -> bool:
    """Send received TCP segment `packet`, too large for one verdict, as several segments:
    the first as its verdict, the others injected right after it (marked, as every
    injected packet is, so that this handle and those above it do not divert them
    again). False, with nothing sent, when it cannot be split (not TCP, a SYN)."""
    parts = split_tcp_segment(packet.raw, handle.edited_size_limit(packet.raw))
    if parts is None or len(parts) == 1:
        return False
    whole, packet.raw = packet.raw, parts[0]
    try:
        handle.send(packet)
    except PacketCutError:
        packet.raw = whole
        _inject_instead(handle, packet, errors)
    else:
        _inject(handle, packet, parts[1:], errors)
    return True


def drain_queued(handle, batch: int = MAX_BATCH):
    """Stop diverting new packets, then yield, batch by batch, those already queued for `handle`.

    Closing a handle makes the kernel drop what is still queued for it; after
    shutdown("recv") new packets pass undiverted and the queued ones stay
    readable, so that they can be given their verdicts first.
    """
    if not handle.is_open or handle.flags & (Flag.DROP | Flag.SEND_ONLY):
        return
    handle.shutdown("recv")
    # Nothing new is queued once the rules are gone: at most a full queue is left.
    left = handle.get_param(Param.QUEUE_LENGTH) + batch
    while left > 0:
        packets = handle.recv_batch(min(batch, MAX_BATCH), 0)
        if not packets:
            return
        left -= len(packets)
        yield packets


def run_conditions(handle, pipeline, stop_event, batch: int = MAX_BATCH, clock=time.monotonic_ns,
                   idle_wait: float = IDLE_WAIT, gather: float = 0.0) -> dict:
    """Move packets from `handle` through `pipeline` until `stop_event` is set.

    On stop the packets still queued for the handle run through the pipeline,
    then every held packet is sent (nothing is lost); returns pipeline.stats()
    plus "send_errors" (how many new packets could not be injected) and the
    first such error, if any, and "send_failed" (received packets dropped
    because an edit made them too large to send, by a rule or at the send)
    and the first error of a send, if any. `gather` is ReadPacing's most wait.
    """
    pacing = ReadPacing(gather)
    errors: list[str] = []
    failed: list[str] = []
    try:
        while not stop_event.is_set():
            deadline = pipeline.next_deadline()
            wait = idle_wait
            if deadline is not None:
                wait = min(wait, max(0.0, (deadline - clock()) / 1e9))
            packets = handle.recv_batch(batch, wait)
            now = clock()
            out = pipeline.due(now)
            if packets:
                out.extend(pipeline.process(packets, now))
            if out:
                send_out(handle, out, errors, failed)
            pause = pacing.wait_after(len(packets), full=len(packets) >= batch)
            if pause:
                deadline = pipeline.next_deadline()
                if deadline is not None:
                    pause = min(pause, max(0.0, (deadline - clock()) / 1e9))
                if pause:
                    time.sleep(pause)
    finally:
        try:
            for packets in drain_queued(handle, batch):
                out = pipeline.process(packets, clock())
                if out:
                    send_out(handle, out, errors, failed)
        finally:
            remaining = pipeline.release_all()
            if remaining and handle.is_open:
                send_out(handle, remaining, errors, failed)
    stats = pipeline.stats()
    stats["send_errors"] = len(errors)
    if errors:
        stats["first_send_error"] = errors[0]
    # A rule drops what its edit makes too large for IP; the send drops what the backend cannot carry.
    stats["send_failed"] = len(failed) + sum(rule.get("send_failed", 0) for rule in stats["rules"])
    if failed:
        stats["first_send_failure"] = failed[0]
    return stats
