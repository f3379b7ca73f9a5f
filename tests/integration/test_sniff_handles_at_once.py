"""SNIFF handles opened at once from threads of one process each find a log group of their own,
as divert handles each find a queue: nfnetlink_log refuses a group another socket holds with
EPERM, where nfnetlink_queue says EBUSY."""

import threading

import pytest

from divertgui.engine.address import Flag
from divertgui.engine.handle import Divert

pytestmark = pytest.mark.netns

HANDLES = 8


def test_sniff_handles_opened_together_from_threads_all_open(netns):
    barrier = threading.Barrier(HANDLES)
    opened, failed = [], []

    def open_one(i: int) -> None:
        with netns.entered():
            handle = Divert(f"udp.DstPort == {7000 + i}", priority=i, flags=Flag.SNIFF)
            barrier.wait(10)
            try:
                handle.open()
            except Exception as exc:
                failed.append(repr(exc))
                return
            opened.append(handle)

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(HANDLES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    try:
        assert failed == [] and len(opened) == HANDLES
        groups = [handle._backend.queue for handle in opened]
        assert len(set(groups)) == HANDLES, groups
    finally:
        for handle in opened:
            handle.close()
