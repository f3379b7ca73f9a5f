"""run_workers: a per-packet handler in two worker processes, in a network namespace, with real UDP traffic."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from divertgui.engine import run_workers

pytestmark = pytest.mark.netns

PORT = 40741
FLOWS, DATAGRAMS = 16, 25


def mark_with_worker(packet):
    """Prefixes the UDP payload with the pid of the worker that handled it."""
    packet.payload = b"%d|" % os.getpid() + packet.payload
    packet.fix_lengths_and_checksums()
    return packet


def drop_odd(packet):
    return None if int(packet.payload) % 2 else packet


def fail_on_seven(packet):
    if packet.payload == b"7":
        raise ValueError("seven")
    return packet


def bytes_for_three(packet):
    return packet.raw if packet.payload == b"3" else packet


def _send_and_stop(stop: threading.Event, received: list, sources: int, count: int) -> None:
    """Datagrams b"<n>" from `sources` loopback addresses (so that netfilter's balancing spreads them);
    what arrives goes to `received`; then stops the workers."""
    try:
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        rx.bind(("127.0.0.1", PORT))
        rx.settimeout(2.0)
        senders = []
        for k in range(sources):
            tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tx.bind((f"127.0.1.{1 + k}", 0))
            senders.append(tx)
        n = 0
        for _ in range(count):
            for tx in senders:
                tx.sendto(b"%d" % n, ("127.0.0.1", PORT))
                n += 1
            time.sleep(0.002)
        try:
            while True:
                received.append(rx.recv(256))
        except TimeoutError:
            pass
        for tx in senders:
            tx.close()
        rx.close()
    finally:
        stop.set()


def _run(netns, handler, sources: int = FLOWS, count: int = DATAGRAMS):
    stop, received = threading.Event(), []
    with netns.entered():
        # The sender starts once the rule is in; it is started from this thread, so it sends in the namespace.
        totals = run_workers(f"outbound and udp.DstPort == {PORT}", handler, workers=2, stop=stop,
                             on_ready=lambda: threading.Thread(
                                 target=_send_and_stop, args=(stop, received, sources, count), daemon=True).start())
    return totals, received


def test_every_datagram_arrives_edited_by_one_of_two_workers_and_counted_once(netns):
    totals, received = _run(netns, mark_with_worker)
    sent = FLOWS * DATAGRAMS
    workers = {line.split(b"|")[0] for line in received}
    assert sorted(int(line.split(b"|")[1]) for line in received) == list(range(sent)), "every datagram, edited"
    assert len(workers) == 2, f"both workers handled packets: {workers}"
    assert totals["handled"] == totals["diverted"] == totals["sent"] == sent, totals
    assert totals["workers"] == 2 and totals["workers_restarted"] == 0, totals
    assert totals["handler_dropped"] == totals["handler_failed"] == 0, totals


def test_a_handler_drops_what_it_returns_none_for_and_its_errors_and_wrong_returns_are_counted(netns):
    totals, received = _run(netns, drop_odd, sources=4, count=5)
    assert sorted(int(line) for line in received) == list(range(0, 20, 2))
    assert totals["handled"] == 20 and totals["handler_dropped"] == 10, totals
    totals, received = _run(netns, fail_on_seven, sources=4, count=5)
    assert sorted(int(line) for line in received) == [n for n in range(20) if n != 7]
    assert totals["handler_failed"] == 1 and totals["handler_error"] == "ValueError: seven", totals
    totals, received = _run(netns, bytes_for_three, sources=2, count=3)
    assert sorted(int(line) for line in received) == [0, 1, 2, 4, 5]
    assert totals["handler_failed"] == 1 and "returned bytes, not a Packet" in totals["handler_error"], totals
