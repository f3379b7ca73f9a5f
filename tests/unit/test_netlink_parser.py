"""QueuedPacketParser reads every queued packet's message as parse_queue_packet does, whatever
the layout of the messages before it."""

import pytest
from hypothesis import given, settings, strategies as st

from divertgui.engine.backends import netlink
from divertgui.engine.errors import NetlinkError

# (attribute, value) the kernel may put before the payload, in its order.
OPTIONAL = [
    (netlink.NFQA_IFINDEX_INDEV, netlink.U32.pack(2)),
    (netlink.NFQA_IFINDEX_OUTDEV, netlink.U32.pack(3)),
    (netlink.NFQA_MARK, netlink.U32.pack(0x753B0400)),
    (9, bytes(12)),                                              # NFQA_HWADDR, not read
    (netlink.NFQA_TIMESTAMP, netlink.TIMESTAMP.pack(1_700_000_000, 123_456)),
    (11 | 0x8000, netlink.attribute(1, b"ct")),                  # nested, not read
    (netlink.NFQA_CAP_LEN, netlink.U32.pack(1500)),
    (netlink.NFQA_SKB_INFO, netlink.U32.pack(netlink.NFQA_SKB_CSUM_NOTVERIFIED)),
]


def queued(packet_id: int, present: list[int], payload: bytes, hook: int = 1) -> bytes:
    attrs = netlink.attribute(netlink.NFQA_PACKET_HDR, netlink.NFQNL_PACKET_HDR.pack(packet_id, 0x0800, hook))
    attrs += b"".join(netlink.attribute(*OPTIONAL[i]) for i in present)
    attrs += netlink.attribute(netlink.NFQA_PAYLOAD, payload)
    return netlink.message(netlink.NFNL_SUBSYS_QUEUE, netlink.NFQNL_MSG_PACKET, 7, attrs)


def both(parser, message: bytes):
    data = memoryview(bytearray(b"\xee" * 16 + message + b"\xee" * 8))
    end = 16 + len(message)
    return parser(data, 32, end), netlink.parse_queue_packet(data, 32, end)


layouts = st.lists(st.integers(0, len(OPTIONAL) - 1), unique=True, max_size=len(OPTIONAL)).map(sorted)
messages = st.tuples(layouts, st.binary(min_size=1, max_size=90), st.integers(0, 4))


@settings(max_examples=200, deadline=None)
@given(st.lists(messages, min_size=1, max_size=12))
def test_each_message_reads_as_parse_queue_packet_reads_it(sequence):
    parser = netlink.QueuedPacketParser()
    for packet_id, (present, payload, hook) in enumerate(sequence, 1):
        # The same layout twice in a row: the second is read at the learned places.
        for repeat in range(2):
            read, walked = both(parser, queued(packet_id * 2 + repeat, present, payload + bytes(repeat), hook))
            assert read == walked


def test_a_later_value_of_an_attribute_given_twice_is_the_one_read():
    parser = netlink.QueuedPacketParser()
    attrs = (netlink.attribute(netlink.NFQA_PACKET_HDR, netlink.NFQNL_PACKET_HDR.pack(5, 0x0800, 1))
             + netlink.attribute(netlink.NFQA_MARK, netlink.U32.pack(1))
             + netlink.attribute(netlink.NFQA_MARK, netlink.U32.pack(2))
             + netlink.attribute(netlink.NFQA_PAYLOAD, b"\x45abc"))
    message = netlink.message(netlink.NFNL_SUBSYS_QUEUE, netlink.NFQNL_MSG_PACKET, 7, attrs)
    for _ in range(2):
        read, walked = both(parser, message)
        assert read == walked and read.mark == 2


def test_a_message_cut_short_is_refused_as_parse_queue_packet_refuses_it():
    parser = netlink.QueuedPacketParser()
    message = queued(1, [0, 4], b"\x45" + bytes(40))
    both(parser, message)
    with pytest.raises(NetlinkError):
        parser(memoryview(bytearray(message)), 16, len(message) - 8)


def test_an_attribute_after_the_payload_is_read_as_the_walk_reads_it():
    parser = netlink.QueuedPacketParser()
    message = queued(1, [0], b"\x45" + bytes(20))
    both(parser, message)
    longer = message + netlink.attribute(netlink.NFQA_MARK, netlink.U32.pack(9))
    longer = netlink.NLMSGHDR.pack(len(longer), *netlink.NLMSGHDR.unpack_from(longer)[1:]) + longer[16:]
    read, walked = both(parser, longer)
    assert read == walked and read.mark == 9


def test_more_kinds_than_it_keeps_in_turn_read_as_walked():
    parser = netlink.QueuedPacketParser()
    kinds = [[0], [1, 2], [0, 4], [1, 4, 7], [0, 3, 4], [0, 6]]
    assert len(kinds) > netlink.QueuedPacketParser.KEPT
    for turn in range(3):
        for number, present in enumerate(kinds):
            read, walked = both(parser, queued(turn * 10 + number + 1, present, b"\x45" + bytes(number)))
            assert read == walked
