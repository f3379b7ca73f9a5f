"""WinDivertOpen: "A packet is only diverted once per priority level, so
handles should not share priority levels unless they use mutually exclusive
filters." Handles that share a level with exclusive filters each get their
own packets, whichever opened first."""

import pytest

from divertgui.engine.handle import Divert
from divertgui.engine.packet import Packet
from tests.integration.conftest import Passthru, receive_expected, udp_socket

pytestmark = pytest.mark.netns

PORT = 40331


@pytest.mark.parametrize("opened_first", ["excluding", "matching"])
def test_a_packet_one_handle_rejects_goes_to_another_of_the_same_priority(netns, opened_first):
    # `ifIdx == 999` cannot be tested in the kernel: the packets reach the
    # first handle's queue and its filter rejects them in user space.
    filters = {"excluding": f"ifIdx == 999 and udp.DstPort == {PORT}",
               "matching": f"udp.DstPort == {PORT} and udp.PayloadLength > 3"}
    order = [opened_first, "matching" if opened_first == "excluding" else "excluding"]
    with netns.entered():
        server = udp_socket("127.0.0.1", PORT)
        handles = {name: Divert(filters[name]).open() for name in order}
        with handles["excluding"], handles["matching"], Passthru(handles["excluding"]) as excluding, \
                Passthru(handles["matching"]) as matching, \
                Divert(f"udp.DstPort == {PORT}", priority=-1) as lower, Passthru(lower) as below:
            client = udp_socket("127.0.0.1")
            for i in range(4):
                client.sendto(b"packet %d" % i, ("127.0.0.1", PORT))
            got = receive_expected(server, 4)
            for side in (excluding, matching, below):
                side.stop()
    assert sorted(got) == [b"packet %d" % i for i in range(4)]
    assert excluding.records == []
    assert sorted(Packet(raw).payload for raw, _ in matching.records) == [b"packet %d" % i for i in range(4)]
    # Once each level has had it, the packet goes on down, once.
    assert sorted(Packet(raw).payload for raw, _ in below.records) == [b"packet %d" % i for i in range(4)]
