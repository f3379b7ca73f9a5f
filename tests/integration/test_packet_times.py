"""Each packet's Address.timestamp is its own: the kernel's stamp where it gives one (arriving
packets), else the time the packet itself was read, never one time for a whole read."""

import time

import pytest

from divertgui.engine.address import Flag
from divertgui.engine.handle import Divert
from tests.integration.conftest import udp_socket

pytestmark = pytest.mark.netns

PORT = 40011
SPACING = 0.02
COUNT = 5


def _received(handle: Divert, count: int) -> list:
    """`count` packets, read only once they have all arrived."""
    packets = []
    end = time.monotonic() + 10
    while len(packets) < count and time.monotonic() < end:
        packets += handle.recv_batch(count - len(packets), 0.2)
    return packets


@pytest.mark.parametrize("flags", [Flag(0), Flag.SNIFF], ids=["divert", "sniff"])
def test_arriving_packets_sent_apart_are_stamped_apart_even_when_read_together(veth, flags):
    """Sent 20 ms apart, read in one go after the last has arrived: stamps at least 10 ms apart
    (the sender's sleeps only ever make the spacing longer)."""
    with veth.a.entered():
        udp_socket(veth.a_v4, PORT)
        with Divert(f"inbound and udp.DstPort == {PORT}", flags=flags) as handle:
            with veth.b.entered():
                sender = udp_socket(veth.b_v4)
                for i in range(COUNT):
                    if i:
                        time.sleep(SPACING)
                    sender.sendto(b"%d" % i, (veth.a_v4, PORT))
            time.sleep(0.1)
            packets = _received(handle, COUNT)
    assert [p.raw[-1:] for p in packets] == [b"%d" % i for i in range(COUNT)]
    stamps = [p.address.timestamp for p in packets]
    gaps = [later - earlier for earlier, later in zip(stamps, stamps[1:])]
    assert all(gap >= SPACING / 2 * 1e9 for gap in gaps), gaps


@pytest.mark.parametrize("flags", [Flag(0), Flag.SNIFF], ids=["divert", "sniff"])
def test_packets_sent_in_a_row_have_distinct_increasing_stamps(netns, flags):
    """Outbound packets carry no kernel stamp: each gets the time it was read, one after another."""
    with netns.entered():
        udp_socket("127.0.0.1", PORT)
        with Divert(f"udp.DstPort == {PORT}", flags=flags) as handle:
            sender = udp_socket("127.0.0.1")
            before = time.monotonic_ns()
            for i in range(10):
                sender.sendto(b"%d" % i, ("127.0.0.1", PORT))
            packets = _received(handle, 10)
            after = time.monotonic_ns()
    stamps = [p.address.timestamp for p in packets]
    assert len(stamps) == 10 and before < stamps[0] and stamps[-1] <= after
    assert all(earlier < later for earlier, later in zip(stamps, stamps[1:])), stamps
