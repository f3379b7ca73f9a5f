"""QueuedBatchColumns reads a recvmmsg batch of queued packets as parse_queue_packet reads each
of them, or declines (None) when any datagram is laid out otherwise."""

import struct

from divertgui.engine.backends import netlink

SLOT = 4096


def queued(packet_id: int, payload: bytes, mark: int | None = None, indev: int = 2, hook: int = 1) -> bytes:
    """A queued packet's message, its attributes in the kernel's order."""
    attrs = netlink.attribute(netlink.NFQA_PACKET_HDR, netlink.NFQNL_PACKET_HDR.pack(packet_id, 0x0800, hook))
    if mark is not None:
        attrs += netlink.attribute(netlink.NFQA_MARK, netlink.U32.pack(mark))
    attrs += netlink.attribute(netlink.NFQA_IFINDEX_INDEV, netlink.U32.pack(indev))
    attrs += netlink.attribute(netlink.NFQA_PAYLOAD, payload)
    return netlink.message(netlink.NFNL_SUBSYS_QUEUE, netlink.NFQNL_MSG_PACKET, 7, attrs)


def batch(messages: list[bytes]) -> tuple[memoryview, list[int]]:
    memory = bytearray(SLOT * len(messages))
    for i, message in enumerate(messages):
        memory[i * SLOT:i * SLOT + len(message)] = message
    return memoryview(memory), [len(m) for m in messages]


def per_packet(view, lengths) -> tuple:
    packets = [netlink.parse_queue_packet(view, i * SLOT + 16, i * SLOT + length) for i, length in enumerate(lengths)]
    return (tuple(p.packet_id for p in packets), tuple(p.hook for p in packets), tuple(p.mark for p in packets),
            tuple(p.payload[0] for p in packets))


def payload(i: int) -> bytes:
    version = 0x60 if i % 3 == 0 else 0x45
    return bytes([version]) + bytes(range(i % 40 + 19))   # lengths that vary, as packets' do


def test_columns_agree_with_each_packet_parsed():
    columns = netlink.QueuedBatchColumns()
    for mark in (None, 0x30001):
        for count in (1, 2, 64):
            view, lengths = batch([queued(100 + i, payload(i), mark) for i in range(count)])
            assert columns(view, lengths, SLOT) == per_packet(view, lengths)


def test_a_batch_laid_out_unevenly_is_declined_and_a_new_layout_learned():
    columns = netlink.QueuedBatchColumns()
    view, lengths = batch([queued(1, payload(1)), queued(2, payload(2), mark=5), queued(3, payload(3))])
    assert columns(view, lengths, SLOT) is None
    view, lengths = batch([queued(4, payload(4), mark=5), queued(5, payload(5), mark=9)])
    assert columns(view, lengths, SLOT) == per_packet(view, lengths)


def test_anything_but_queued_packets_is_declined():
    columns = netlink.QueuedBatchColumns()
    error = netlink.NLMSGHDR.pack(36, netlink.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -2) + bytes(16)
    view, lengths = batch([queued(1, payload(1)), error])
    assert columns(view, lengths, SLOT) is None
    # Two messages in one datagram: the datagram's length is not the first message's.
    first, second = queued(2, payload(2)), queued(3, payload(3))
    view, lengths = batch([first + second])
    assert columns(view, lengths, SLOT) is None
