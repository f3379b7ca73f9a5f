"""A worker killed partway through writing a message costs the pool and the capture service only
that worker: the others report on, the killed one is restarted, and everything ends.

The cut is made where every message a worker sends is written, multiprocessing's
Connection._send: patched in this process before the namespace's fork server is forked
(so the workers inherit it), it writes half of the first message that carries a given
name, in a worker, then SIGKILLs that worker."""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import signal
import socket
import threading
import time
from multiprocessing.connection import Connection

import pytest

from tests.integration.conftest import wait_until

pytestmark = pytest.mark.netns

PORT = 40779
BOUND = 45      # seconds the pool or the capture has to get past the cut-off message and end


def wait_for_stop(handle, stop, options) -> dict:
    # Polled: a worker killed inside stop.wait() would leave the Event's condition waiting for it.
    while not stop.is_set():
        time.sleep(0.05)
    return {"ran": 1, "collector_threshold": str(gc.get_threshold()[0])}


@pytest.fixture
def cut_off(monkeypatch, tmp_path):
    """`cut_off(name)`: the first message carrying the string `name` that a worker writes is cut."""
    armed = tmp_path / "armed"
    send = Connection._send

    def arm(name: str) -> None:
        mark = b"\x8c" + bytes([len(name)]) + name.encode()   # the string as pickle writes it

        def cut_send(self, buf, write=os.write):
            if (multiprocessing.current_process().name.startswith("divert worker") and mark in bytes(buf)
                    and armed.exists()):
                with contextlib.suppress(FileNotFoundError):
                    armed.unlink()      # only the worker that removes it is cut
                    write(self._handle, bytes(buf)[:len(buf) // 2])
                    os.kill(os.getpid(), signal.SIGKILL)
            return send(self, buf, write)

        armed.touch()
        monkeypatch.setattr(Connection, "_send", cut_send)

    yield arm
    armed.unlink(missing_ok=True)   # a fork server of this namespace that outlives the test cuts nothing


def _in_thread(netns, run) -> threading.Thread:
    def entered() -> None:
        with netns.entered():
            run()
    thread = threading.Thread(target=entered, daemon=True)
    thread.start()
    return thread


def _kill(processes) -> None:
    for process in processes:
        with contextlib.suppress(Exception):
            process.kill()


@pytest.fixture
def default_collector():
    """This process's collector at Python's default, as the workers forked from it would inherit it."""
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*before)


def test_a_worker_cut_off_in_a_report_is_restarted_and_the_pool_ends(netns, cut_off, default_collector):
    from divertgui.engine.collector_settings import PACKET_FLOW_THRESHOLD
    from divertgui.engine.worker_pool import WorkerPool
    cut_off("stats")
    stop, box = threading.Event(), {}

    def run() -> None:
        box["pool"] = WorkerPool(f"udp.DstPort == {PORT}", wait_for_stop, 2)
        box["totals"] = box["pool"].run(stop)

    thread = _in_thread(netns, run)
    try:
        wait_until(lambda: "pool" in box and box["pool"].restarted, BOUND)
        stop.set()
        thread.join(BOUND)
        assert not thread.is_alive(), "the pool hung on a worker's cut-off report"
        totals = box["totals"]
        assert totals["workers_restarted"] == 1, totals
        # The worker that kept going and the restarted one both finished and said so.
        assert totals["ran"] == 2, totals
        assert totals["collector_threshold"] == str(PACKET_FLOW_THRESHOLD)
        assert not any(process.is_alive() for process in box["pool"]._processes.values())
    finally:
        stop.set()
        if thread.is_alive():
            _kill(box["pool"]._processes.values())


def test_a_capture_worker_cut_off_in_its_rows_is_restarted_and_the_others_rows_come(netns, cut_off):
    from divertgui.engine.address import Layer
    from divertgui.engine.pooled_capture import PooledCapture
    from divertgui.engine.store import CaptureStore
    cut_off("rows")
    store, box = CaptureStore(), {}

    def run() -> None:
        capture = box["capture"] = PooledCapture(store, f"udp.DstPort == {PORT}", Layer.NETWORK, 0, 2, [])
        capture.start()
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", PORT))
        # Several source addresses, so that the queues' balancing gives each worker some.
        senders = []
        for k in range(8):
            tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tx.bind((f"127.0.1.{1 + k}", 0))
            senders.append(tx)
        rows_at_restart = None
        for _ in range(2000):
            for tx in senders:
                tx.sendto(b"x", ("127.0.0.1", PORT))
            capture.pump(0.02)
            restarted = capture.stats()[1].get("workers_restarted", 0)
            if restarted and rows_at_restart is None:
                rows_at_restart = len(store)
            if rows_at_restart is not None and len(store) > rows_at_restart + 50:
                break
        box["rows"] = (rows_at_restart, len(store))
        capture.close()
        box["handles"] = capture.stats()[1]
        for sock in (rx, *senders):
            sock.close()

    thread = _in_thread(netns, run)
    try:
        thread.join(BOUND)
        assert not thread.is_alive(), "the capture service hung on a worker's cut-off rows"
        rows_at_restart, rows = box["rows"]
        assert rows_at_restart is not None and rows > rows_at_restart + 50, box
        assert box["handles"]["workers_restarted"] == 1, box
    finally:
        if thread.is_alive() and "capture" in box:
            box["capture"]._stop.set()
            _kill(box["capture"]._pool._processes.values())
