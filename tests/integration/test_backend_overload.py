"""A flood beyond what the reader keeps up with: every packet is accounted for."""

import socket

import pytest

from divertgui.engine.address import Flag, Param
from divertgui.engine.handle import Divert
from tests.integration.conftest import receive_all, receive_expected, udp_socket, wait_until

pytestmark = pytest.mark.netns

PORT = 40051
FLOOD = 400


def _flood(count: int) -> int:
    client = udp_socket("127.0.0.1")
    sent = 0
    for i in range(count):
        client.sendto(b"flood %d" % i, ("127.0.0.1", PORT))
        sent += 1
    return sent


def _big_receiver() -> socket.socket:
    server = udp_socket("127.0.0.1", PORT)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    return server


@pytest.mark.parametrize("fail_open", [False, True], ids=["drop-beyond-queue", "fail-open"])
@pytest.mark.backend_differs("pydivert", when={"fail_open": True},
                             skip="FAIL_OPEN is netfilter's queue bypass; WinDivert and libebpfdivert have no "
                                  "such mode (the backend passes the flag over)")
def test_overload_is_counted_packet_for_packet(netns, backend, fail_open):
    with netns.entered():
        server = _big_receiver()
        handle = Divert(f"udp.DstPort == {PORT}", flags=Flag.FAIL_OPEN if fail_open else Flag(0),
                        backend=backend())
        handle.set_param(Param.QUEUE_LENGTH, 32)
        handle.set_param(Param.QUEUE_TIME, 16000)
        with handle:
            sent = _flood(FLOOD)        # nobody reads while the flood runs
            read = 0
            while batch := handle.recv_batch(64, 0.3):
                read += len(batch)
                handle.send_batch(batch)
            arrived = receive_expected(server, sent if fail_open else read)
            stats = handle.stats()
    assert stats["diverted"] == read
    # A backend whose kernel program tests the whole filter has no user-space rejections to count.
    assert stats["expired"] == 0 and stats.get("rejected", 0) == 0
    assert stats["diverted"] + stats["overflowed"] + stats["bypassed"] == sent
    if fail_open:
        assert stats["overflowed"] == 0 and stats["bypassed"] > 0
        assert len(arrived) == sent
    else:
        assert stats["bypassed"] == 0 and stats["overflowed"] > 0
        assert len(arrived) == read


@pytest.mark.backend_differs("pydivert", xfail="libebpfdivert expires held packets only when the handle is next "
                                               "read, and counts them as queue_full (overflowed), not expired")
def test_packets_not_read_within_queue_time_expire_and_are_counted(netns, backend):
    with netns.entered():
        server = _big_receiver()
        handle = Divert(f"udp.DstPort == {PORT}", backend=backend())
        handle.set_param(Param.QUEUE_TIME, 100)
        with handle:
            sent = _flood(5)
            expired = wait_until(lambda: handle.stats()["expired"] == 5, 2)
            late = handle.recv_batch(16, 0.2)
            arrived = receive_all(server, 0.2)
            stats = handle.stats()
    assert expired, stats
    assert late == [] and arrived == []
    assert stats["diverted"] + stats["expired"] + stats["overflowed"] + stats["bypassed"] == sent
