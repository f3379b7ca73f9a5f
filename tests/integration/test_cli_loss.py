"""`divert` says when it loses packets: while it happens, at the end, and in its exit status with --strict.

The loss is real: a flood meets a kernel queue of QUEUE_LENGTH 32 whose
reader cannot take packets (stopped with SIGSTOP, or holding them for a lag).
"""

from __future__ import annotations

import os
import re
import select
import signal
import time

import pytest

from tests.integration.conftest import receive_all, udp_socket, worker_processes
from tests.integration.test_cli_netns import finish, our_chains, start_cli

pytestmark = pytest.mark.netns

PORT = 40351
QUEUE = 32
FLOOD = 300
WARNING = re.compile(r"divert: warning: (\d+) packets lost in the last second; (\d+) of (\d+) \([\d.]+ %\) so far: "
                     r"overflowed (\d+)")
FINAL = re.compile(r"divert: lost (\d+) of (\d+) packets \(([\d.]+) %\): overflowed (\d+)")


def flood(veth, count: int) -> None:
    with veth.a.entered():
        sender = udp_socket(veth.a_v4)
        for i in range(count):
            sender.sendto(b"flood %d" % i, (veth.b_v4, PORT))
        sender.close()


def read_until_warning(process, seconds: float = 15.0) -> str:
    """stderr lines until the first loss warning (or the time runs out); what was read."""
    seen = ""
    end = time.monotonic() + seconds
    while not WARNING.search(seen) and time.monotonic() < end and process.poll() is None:
        ready, _, _ = select.select([process.stderr], [], [], 0.5)
        if ready:
            seen += process.stderr.readline()
    return seen


@pytest.mark.parametrize("command, strict", [("passthru", False), ("passthru", True), ("netfilter", True)])
def test_a_flood_that_overflows_the_queue_is_reported_while_it_happens_and_at_the_end(veth, command, strict):
    with veth.b.entered():
        server = udp_socket(veth.b_v4, PORT)
    process = start_cli(veth.b, command, f"inbound and udp.DstPort == {PORT}", "--queue-length", str(QUEUE),
                        *(["--strict"] if strict else []))
    try:
        process.send_signal(signal.SIGSTOP)
        flood(veth, FLOOD)
        process.send_signal(signal.SIGCONT)
        during = read_until_warning(process)
    finally:
        process.send_signal(signal.SIGCONT)
        code, out, err = finish(process, signal.SIGINT)
    warning = WARNING.search(during)
    assert warning, f"no loss warning while running: {during}{err}"
    new, lost, offered, overflowed = map(int, warning.groups())
    assert new == lost == overflowed == FLOOD - QUEUE and offered == FLOOD, during
    final = FINAL.search(err)
    assert final, err
    assert (int(final[1]), int(final[2]), final[3], int(final[4])) == \
        (FLOOD - QUEUE, FLOOD, f"{100 * (FLOOD - QUEUE) / FLOOD:.1f}", FLOOD - QUEUE), err
    assert code == (3 if strict else 0), err
    with veth.b.entered():
        got = receive_all(server, 0.5)
    assert len(got) == (QUEUE if command == "passthru" else 0)
    assert our_chains(veth.b) == []


def test_conditions_warn_while_a_lag_holds_the_queue_full_and_strict_fails(veth):
    with veth.b.entered():
        server = udp_socket(veth.b_v4, PORT)
    process = start_cli(veth.b, "conditions", f"inbound and udp.DstPort == {PORT}", "--lag", "10000",
                        "--queue-length", str(QUEUE), "--strict")
    try:
        flood(veth, FLOOD // 3)
        during = read_until_warning(process)
    finally:
        code, out, err = finish(process, signal.SIGINT)
    assert WARNING.search(during), f"no loss warning while the lag held the queue: {during}{err}"
    final = FINAL.search(err)
    assert final and (int(final[1]), int(final[2])) == (FLOOD // 3 - QUEUE, FLOOD // 3), err
    assert code == 3, err
    with veth.b.entered():
        assert len(receive_all(server, 0.5)) == QUEUE  # the held ones are released on stop, not lost


def test_no_loss_is_said_plainly_and_strict_then_exits_0(veth):
    with veth.b.entered():
        server = udp_socket(veth.b_v4, PORT)
    process = start_cli(veth.b, "passthru", f"inbound and udp.DstPort == {PORT}", "--strict")
    try:
        flood(veth, 20)
        with veth.b.entered():
            got = receive_all(server, 0.5)
    finally:
        code, out, err = finish(process, signal.SIGINT)
    assert len(got) == 20
    assert "divert: lost 0 of 20 packets (0.0 %)" in err and "warning" not in err, err
    assert code == 0, err


def test_workers_that_overflow_their_queue_are_reported_while_it_happens_and_at_the_end(veth):
    """Both workers stopped while a flood meets their queues: one flow, so one worker's queue takes it."""
    with veth.b.entered():
        server = udp_socket(veth.b_v4, PORT)
    process = start_cli(veth.b, "passthru", f"inbound and udp.DstPort == {PORT}", "--queue-length", str(QUEUE),
                        "--workers", "2", "--strict")
    workers = worker_processes(process.pid)
    try:
        assert len(workers) == 2, workers
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        flood(veth, FLOOD)
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
        during = read_until_warning(process)
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
        code, out, err = finish(process, signal.SIGINT)
    warning = WARNING.search(during)
    assert warning, f"no loss warning while running: {during}{err}"
    new, lost, _, overflowed = map(int, warning.groups())
    assert new == lost == overflowed == FLOOD - QUEUE, during
    final = FINAL.search(err)
    assert final, err
    assert (int(final[1]), int(final[2]), int(final[4])) == (FLOOD - QUEUE, FLOOD, FLOOD - QUEUE), err
    assert code == 3, err
    with veth.b.entered():
        assert len(receive_all(server, 0.5)) == QUEUE
    assert our_chains(veth.b) == []
