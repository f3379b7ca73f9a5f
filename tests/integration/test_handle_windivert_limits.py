"""WinDivertOpen's flag check and WINDIVERT_PARAM_QUEUE_SIZE, as WinDivert has them."""

import pytest

from divertgui.engine.address import Flag, Param
from divertgui.engine.errors import DivertArgumentError
from divertgui.engine.handle import Divert
from tests.integration.conftest import receive_expected, udp_socket, wait_until

PORT = 40081


@pytest.mark.parametrize("bits", [0x0040, 0x8000, 0x1_0000_0000])
def test_unknown_flag_bits_are_refused(bits):
    # WinDivertOpen fails with ERROR_INVALID_PARAMETER: "This indicates an
    # invalid packet filter string, layer, priority, or flags."
    with pytest.raises(DivertArgumentError, match="unknown bits"):
        Divert("true", flags=Flag.SNIFF | bits)


@pytest.mark.netns
def test_queue_size_caps_the_queued_bytes_and_counts_what_it_drops(netns):
    # WINDIVERT_PARAM_QUEUE_SIZE: "Sets the maximum number of bytes that can
    # be stored in the packet queue for WinDivertRecv()"; when it is full
    # WinDivert drops the oldest queued packet (sys/windivert.c: "The queue
    # is full; drop a packet & try again").
    sent, payload = 100, b"x" * 1400
    fits = 64 * 1024 // (20 + 8 + 4 + len(payload))
    with netns.entered():
        server = udp_socket("127.0.0.1", PORT)
        handle = Divert(f"udp.DstPort == {PORT}")
        handle.set_param(Param.QUEUE_SIZE, 64 * 1024)
        handle.set_param(Param.QUEUE_TIME, 16000)    # none expires on a busy machine
        with handle:
            client = udp_socket("127.0.0.1")
            for i in range(sent):
                client.sendto(i.to_bytes(4, "big") + payload, ("127.0.0.1", PORT))
            # Nobody reads yet: the handle queues what fits and drops the oldest beyond.
            assert wait_until(lambda: handle.stats()["overflowed"] >= sent - fits, 10)
            received = []
            while batch := handle.recv_batch(64, 0.5):
                received += batch
                for packet in batch:
                    handle.send(packet)
            overflowed = handle.stats()["overflowed"]
        got = receive_expected(server, len(received))
    queued_bytes = sum(len(packet.raw) for packet in received)
    assert queued_bytes <= 64 * 1024
    assert len(received) == fits and len(received) + overflowed == sent
    # The oldest went: what is left is the newest, in order.
    numbers = [int.from_bytes(packet.payload[:4], "big") for packet in received]
    assert numbers == list(range(sent - len(received), sent))
    assert len(got) == len(received)
