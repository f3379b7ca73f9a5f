"""nfnetlink messages for nfnetlink_queue (divert) and nfnetlink_log (sniff),
built and parsed with struct over socket(AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER).

Layouts are those of linux/netlink.h, linux/netfilter/nfnetlink.h,
nfnetlink_queue.h and nfnetlink_log.h. Every number on the wire after the
nfgenmsg header is big-endian; the netlink headers themselves are host order.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import operator
import os
import select
import socket
import struct
from typing import Iterator, NamedTuple

from divertgui.engine.errors import NetlinkError

NETLINK_NETFILTER = 12

# linux/netlink.h
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP_INTR = 0x1, 0x4, 0x10
NLM_F_ROOT, NLM_F_MATCH, NLM_F_CREATE, NLM_F_APPEND = 0x100, 0x200, 0x400, 0x800
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF  # strips NLA_F_NESTED and NLA_F_NET_BYTEORDER

NLMSGHDR = struct.Struct("=IHHII")      # len, type, flags, seq, pid
NLMSGERR_CODE = struct.Struct("=i")     # struct nlmsgerr's error: 0 acknowledges, else -errno
NFGENMSG = struct.Struct("!BBH")        # family, version, res_id (queue or group number)
NLATTR = struct.Struct("=HH")           # len, type
NFNETLINK_V0 = 0

# linux/netfilter/nfnetlink.h
NFNL_SUBSYS_QUEUE = 3
NFNL_SUBSYS_ULOG = 4

# nfnetlink_queue.h
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG, NFQNL_MSG_VERDICT_BATCH = 0, 1, 2, 3
NFQA_PACKET_HDR, NFQA_VERDICT_HDR, NFQA_MARK, NFQA_TIMESTAMP = 1, 2, 3, 4
NFQA_IFINDEX_INDEV, NFQA_IFINDEX_OUTDEV = 5, 6
NFQA_PAYLOAD, NFQA_CAP_LEN, NFQA_SKB_INFO = 10, 13, 14
NFQNL_CFG_CMD_BIND, NFQNL_CFG_CMD_UNBIND = 1, 2
NFQNL_COPY_PACKET = 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN, NFQA_CFG_MASK, NFQA_CFG_FLAGS = 1, 2, 3, 4, 5
NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_CONNTRACK, NFQA_CFG_F_GSO = 0x1, 0x2, 0x4
NFQA_SKB_CSUMNOTREADY, NFQA_SKB_GSO, NFQA_SKB_CSUM_NOTVERIFIED = 0x1, 0x2, 0x4

NFQNL_PACKET_HDR = struct.Struct("!IHB")      # packet_id, hw_protocol, hook (packed)
NFQNL_VERDICT_HDR = struct.Struct("!II")      # verdict, id
NFQNL_CONFIG_CMD = struct.Struct("!BxH")      # command, _pad, pf
NFQNL_CONFIG_PARAMS = struct.Struct("!IB")    # copy_range, copy_mode (packed)
TIMESTAMP = struct.Struct("!qq")              # sec, usec

# nfnetlink_log.h
NFULNL_MSG_PACKET, NFULNL_MSG_CONFIG = 0, 1
NFULA_PACKET_HDR, NFULA_MARK, NFULA_TIMESTAMP = 1, 2, 3
NFULA_IFINDEX_INDEV, NFULA_IFINDEX_OUTDEV, NFULA_PAYLOAD, NFULA_SEQ = 4, 5, 9, 12
NFULA_CFG_CMD, NFULA_CFG_MODE, NFULA_CFG_NLBUFSIZ = 1, 2, 3
NFULA_CFG_TIMEOUT, NFULA_CFG_QTHRESH, NFULA_CFG_FLAGS = 4, 5, 6
NFULNL_CFG_F_SEQ = 0x0001
NFULNL_CFG_CMD_BIND, NFULNL_CFG_CMD_UNBIND = 1, 2
NFULNL_COPY_PACKET = 2
NFULNL_PACKET_HDR = struct.Struct("!HBx")     # hw_protocol, hook, _pad
NFULNL_CONFIG_CMD = struct.Struct("!B")
NFULNL_CONFIG_MODE = struct.Struct("!IBx")    # copy_range, copy_mode, _pad

# linux/netfilter.h verdicts; NF_REPEAT runs the packet through the same hook again
NF_DROP, NF_ACCEPT, NF_REPEAT = 0, 1, 4

# linux/netfilter.h hooks, as reported in the packet header
NF_INET_PRE_ROUTING, NF_INET_LOCAL_IN, NF_INET_FORWARD, NF_INET_LOCAL_OUT, NF_INET_POST_ROUTING = range(5)

SO_TIMESTAMP_OLD = 29                         # asm-generic/socket.h: SO_TIMESTAMP with a struct timeval

U32 = struct.Struct("!I")
U16 = struct.Struct("!H")

MAX_COPY = 0xFFFF
# An attribute's length is 16 bits and counts its own header: the most bytes a
# verdict can put back in place of a queued packet.
MAX_VERDICT_PAYLOAD = 0xFFFF - NLATTR.size
# What one send() of concatenated verdicts stays within: the kernel refuses
# (EMSGSIZE) a netlink datagram larger than the socket's send buffer.
MAX_SEND = 128 * 1024


class NetfilterPacket(NamedTuple):
    """One packet as nfnetlink_queue or nfnetlink_log hands it up."""

    packet_id: int          # 0 for logged (sniffed) packets: nothing waits for a verdict
    hw_protocol: int        # ethertype: 0x0800 IPv4, 0x86DD IPv6
    hook: int               # NF_INET_*
    mark: int
    indev: int              # ifindex, 0 when absent
    outdev: int
    timestamp: tuple | None  # (sec, usec) on the wall clock when the kernel stamped the packet
    payload: bytes
    skb_info: int           # NFQA_SKB_* bits
    cap_len: int            # original length when the copy was cut short, else len(payload)
    log_seq: int = -1       # nfnetlink_log's per-group sequence number: its gaps are lost copies


def _align(n: int) -> int:
    return (n + 3) & ~3


def attribute(kind: int, value: bytes) -> bytes:
    length = NLATTR.size + len(value)
    return NLATTR.pack(length, kind) + value + b"\0" * (_align(length) - length)


def message(subsys: int, msg: int, res_id: int, attrs: bytes, *, family: int = socket.AF_UNSPEC,
            flags: int = NLM_F_REQUEST, seq: int = 0) -> bytes:
    body = NFGENMSG.pack(family, NFNETLINK_V0, res_id) + attrs
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), (subsys << 8) | msg, flags, seq, 0) + body


def iter_attributes(data, offset: int, end: int) -> Iterator[tuple[int, memoryview]]:
    view = memoryview(data)
    while offset + NLATTR.size <= end:
        length, kind = NLATTR.unpack_from(view, offset)
        if length < NLATTR.size or offset + length > end:
            raise NetlinkError(errno.EPROTO, f"malformed netlink attribute at byte {offset}")
        yield kind & NLA_TYPE_MASK, view[offset + NLATTR.size:offset + length]
        offset += _align(length)


def iter_messages(data, length: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(type, flags, seq, body_offset, end) of each netlink message in data[:length]."""
    offset = 0
    while offset + NLMSGHDR.size <= length:
        msg_len, msg_type, flags, seq, _pid = NLMSGHDR.unpack_from(data, offset)
        if msg_len < NLMSGHDR.size or offset + msg_len > length:
            raise NetlinkError(errno.EPROTO, f"truncated netlink message at byte {offset}")
        yield msg_type, flags, seq, offset + NLMSGHDR.size, offset + msg_len
        offset += _align(msg_len)


# -- nfnetlink_queue ---------------------------------------------------------

def queue_config_cmd(queue: int, command: int, pf: int = socket.AF_UNSPEC, seq: int = 0) -> bytes:
    return message(NFNL_SUBSYS_QUEUE, NFQNL_MSG_CONFIG, queue,
                   attribute(NFQA_CFG_CMD, NFQNL_CONFIG_CMD.pack(command, pf)),
                   flags=NLM_F_REQUEST | NLM_F_ACK, seq=seq)


def queue_config_params(queue: int, *, copy_range: int, max_len: int, fail_open: bool, seq: int = 0) -> bytes:
    # GSO is left off on purpose: the kernel then segments GSO packets and
    # completes partial checksums before queueing, so user space sees packets
    # as they are on the wire (each within the MTU, checksums valid), which is
    # what WinDivert's filters, hashes and edits assume.
    flags = NFQA_CFG_F_FAIL_OPEN if fail_open else 0
    mask = NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO
    attrs = (attribute(NFQA_CFG_PARAMS, NFQNL_CONFIG_PARAMS.pack(copy_range, NFQNL_COPY_PACKET))
             + attribute(NFQA_CFG_QUEUE_MAXLEN, U32.pack(max_len))
             + attribute(NFQA_CFG_FLAGS, U32.pack(flags))
             + attribute(NFQA_CFG_MASK, U32.pack(mask)))
    return message(NFNL_SUBSYS_QUEUE, NFQNL_MSG_CONFIG, queue, attrs,
                   flags=NLM_F_REQUEST | NLM_F_ACK, seq=seq)


def verdict(queue: int, packet_id: int, code: int, payload: bytes | None = None,
            mark: int | None = None) -> bytes:
    attrs = attribute(NFQA_VERDICT_HDR, NFQNL_VERDICT_HDR.pack(code, packet_id))
    if mark is not None:
        attrs += attribute(NFQA_MARK, U32.pack(mark))
    if payload is not None:
        attrs += attribute(NFQA_PAYLOAD, payload)
    return message(NFNL_SUBSYS_QUEUE, NFQNL_MSG_VERDICT, queue, attrs)


def verdict_batch(queue: int, up_to_id: int, code: int, mark: int | None = None) -> bytes:
    """One verdict (and mark) for every packet of the queue whose id is <= up_to_id."""
    attrs = attribute(NFQA_VERDICT_HDR, NFQNL_VERDICT_HDR.pack(code, up_to_id))
    if mark is not None:
        attrs += attribute(NFQA_MARK, U32.pack(mark))
    return message(NFNL_SUBSYS_QUEUE, NFQNL_MSG_VERDICT_BATCH, queue, attrs)


def parse_queue_packet(data, body: int, end: int) -> NetfilterPacket:
    # The hot path of every diverted packet: attributes are walked in place,
    # most frequent first. Nested attributes (NFQA_CT, ...) carry
    # NLA_F_NESTED in their type and so match none of these without masking.
    packet_id = hw_protocol = hook = mark = indev = outdev = skb_info = 0
    timestamp = None
    payload = b""
    cap_len = -1
    offset = body + 4  # past the nfgenmsg header
    unpack_attribute, unpack_u32 = _NLATTR_UNPACK, _U32_UNPACK
    while offset + 4 <= end:
        length, kind = unpack_attribute(data, offset)
        if length < 4 or offset + length > end:
            raise NetlinkError(errno.EPROTO, f"malformed netlink attribute at byte {offset}")
        if kind == NFQA_PAYLOAD:
            payload = bytes(data[offset + 4:offset + length])
        elif kind == NFQA_PACKET_HDR:
            packet_id, hw_protocol, hook = _PACKET_HDR_UNPACK(data, offset + 4)
        elif kind == NFQA_IFINDEX_INDEV:
            indev = unpack_u32(data, offset + 4)[0]
        elif kind == NFQA_IFINDEX_OUTDEV:
            outdev = unpack_u32(data, offset + 4)[0]
        elif kind == NFQA_MARK:
            mark = unpack_u32(data, offset + 4)[0]
        elif kind == NFQA_SKB_INFO:
            skb_info = unpack_u32(data, offset + 4)[0]
        elif kind == NFQA_TIMESTAMP:
            timestamp = TIMESTAMP.unpack_from(data, offset + 4)
        elif kind == NFQA_CAP_LEN:
            cap_len = unpack_u32(data, offset + 4)[0]
        offset += (length + 3) & ~3
    if packet_id == 0:
        raise NetlinkError(errno.EPROTO, "nfnetlink_queue packet message without NFQA_PACKET_HDR")
    return _new_packet(NetfilterPacket, (packet_id, hw_protocol, hook, mark, indev, outdev, timestamp, payload,
                                         skb_info, len(payload) if cap_len < 0 else cap_len, -1))


_NLATTR_UNPACK, _U32_UNPACK, _PACKET_HDR_UNPACK = NLATTR.unpack_from, U32.unpack_from, NFQNL_PACKET_HDR.unpack_from
_LENGTH_AND_TYPE = struct.Struct("=IH").unpack_from  # the start of a netlink message header
# NamedTuple's own __new__ is a Python function; building the tuple directly skips that call.
_new_packet = tuple.__new__


# What each attribute parse_queue_packet reads holds, as struct codes; the rest are skipped.
_QUEUED_VALUES = {NFQA_PACKET_HDR: "IHB", NFQA_MARK: "I", NFQA_IFINDEX_INDEV: "I", NFQA_IFINDEX_OUTDEV: "I",
                  NFQA_SKB_INFO: "I", NFQA_CAP_LEN: "I", NFQA_TIMESTAMP: "qq"}
# The fields of NetfilterPacket up to the timestamp, and the one after the payload, in that order.
_PICKED = (NFQA_PACKET_HDR, NFQA_MARK, NFQA_IFINDEX_INDEV, NFQA_IFINDEX_OUTDEV, NFQA_SKB_INFO)


class _Layout(NamedTuple):
    """Where the values of queued packets' messages laid out alike are."""

    headers: struct.Struct     # the attribute headers, the payload's last
    expected: tuple            # what they hold, but the payload's length
    values: struct.Struct      # the attributes' values, big-endian
    size: int                  # the bytes before the payload
    pick: operator.itemgetter  # (id, hw_protocol, hook, mark, indev, outdev, skb_info) from values + (0,)
    timestamp_at: int          # where in values, or -1
    cap_len_at: int


class QueuedPacketParser:
    """parse_queue_packet, reading a message laid out like a recent one in two struct unpacks.

    The kernel lays out the attributes of packets of one kind alike (see
    QueuedPacketSummary): the payload last, the same attributes before it.
    So a message's attribute headers are checked against the layouts
    learned from the last few kinds of message walked (a handle's inbound
    and outbound packets are two), and the values are read at known places.
    A message laid out otherwise is walked by parse_queue_packet, and its
    layout is learned.
    """

    KEPT = 4     # layouts tried, the most recently learned first

    def __init__(self):
        self._layouts: list[_Layout] = []
        self._known: dict[tuple, _Layout | None] = {}   # every layout learned, by its attribute headers

    def __call__(self, data, body: int, end: int) -> NetfilterPacket:
        start = body + 4
        for headers, expected, values, size, pick, timestamp_at, cap_len_at in self._layouts:
            if end - start < size:
                continue
            found = headers.unpack_from(data, start)
            if found[:-2] != expected or found[-1] != NFQA_PAYLOAD:
                continue
            payload_end = start + size + found[-2] - 4
            read = values.unpack_from(data, start) + (0,)
            packet_id, hw_protocol, hook, mark, indev, outdev, skb_info = pick(read)
            # Past the payload there is only padding, no attribute parse_queue_packet would read.
            if not packet_id or found[-2] < 4 or not 0 <= end - payload_end < 4:
                break
            payload = bytes(data[start + size:payload_end])
            timestamp = (read[timestamp_at], read[timestamp_at + 1]) if timestamp_at >= 0 else None
            return _new_packet(NetfilterPacket, (packet_id, hw_protocol, hook, mark, indev, outdev, timestamp, payload,
                                                 skb_info, read[cap_len_at] if cap_len_at >= 0 else len(payload), -1))
        packet = parse_queue_packet(data, body, end)
        self._learn(data, start, end)
        return packet

    def _learn(self, data, start: int, end: int) -> None:
        """The layout of a message parse_queue_packet has read, tried first from now on."""
        offset, expected = start, []
        while offset + 4 <= end:
            length, kind = NLATTR.unpack_from(data, offset)
            if kind == NFQA_PAYLOAD:
                break
            expected += (length, kind)
            offset += _align(length)
        else:
            return
        expected = tuple(expected)
        if expected not in self._known:
            self._known[expected] = _layout(expected)
        layout = self._known[expected]
        if layout is not None:
            if layout in self._layouts:
                self._layouts.remove(layout)
            self._layouts.insert(0, layout)
            del self._layouts[self.KEPT:]


def _layout(expected: tuple) -> _Layout | None:
    """The layout of messages whose attributes before the payload have these (length, kind)
    headers; None when parse_queue_packet would not find the packet header there."""
    header_format, value_format = ["="], ["!"]
    field, fields = 0, {}
    for length, kind in zip(expected[0::2], expected[1::2]):
        padded = _align(length)
        header_format.append(f"HH{padded - 4}x")
        code = _QUEUED_VALUES.get(kind)
        if code is None or length - 4 < struct.calcsize("!" + code):
            value_format.append(f"{padded}x")
        else:
            value_format.append(f"4x{code}{padded - 4 - struct.calcsize('!' + code)}x")
            # The last of two alike is the one parse_queue_packet keeps.
            fields[kind] = field
            field += len(code)
    if NFQA_PACKET_HDR not in fields:
        return None
    header_format.append("HH")
    value_format.append("4x")
    header_at = fields[NFQA_PACKET_HDR]
    headers = struct.Struct("".join(header_format))
    # Absent fields read the 0 appended to the values.
    return _Layout(headers, expected, struct.Struct("".join(value_format)), headers.size,
                   operator.itemgetter(header_at, header_at + 1, header_at + 2,
                                       *(fields.get(kind, field) for kind in _PICKED[1:])),
                   fields.get(NFQA_TIMESTAMP, -1), fields.get(NFQA_CAP_LEN, -1))


class QueuedPacketSummary:
    """(packet id, hook, mark, first payload byte) of a queued packet's message, without the rest.

    The kernel lays out the attributes of packets of one kind (same hook,
    devices, mark or none) alike, so the layout walked in one message is
    checked against the next in one unpack of its attribute headers, and
    the values are read at known places. A message laid out otherwise is
    walked, and its layout becomes the one expected.
    """

    def __init__(self):
        self._headers: struct.Struct | None = None
        self._expected: tuple = ()
        self._values: struct.Struct | None = None
        self._size = 0
        self._has_mark = False

    def __call__(self, data, body: int, end: int) -> tuple[int, int, int, int]:
        headers = self._headers
        if headers is not None and end - body - 4 >= self._size and \
                headers.unpack_from(data, body + 4) == self._expected:
            if self._has_mark:
                return self._values.unpack_from(data, body + 4)
            packet_id, hook, first_byte = self._values.unpack_from(data, body + 4)
            return packet_id, hook, 0, first_byte
        return self._learn(data, body, end)

    def _learn(self, data, body: int, end: int) -> tuple[int, int, int, int]:
        start = body + 4
        offset = start
        header_format, expected = ["="], []
        header_at = mark_at = payload_at = None
        packet_id = hook = mark = first_byte = 0
        while offset + 4 <= end:
            length, kind = NLATTR.unpack_from(data, offset)
            if length < 4 or offset + length > end:
                raise NetlinkError(errno.EPROTO, f"malformed netlink attribute at byte {offset}")
            if kind == NFQA_PAYLOAD:
                header_format.append("2xH")
                expected.append(kind)
                payload_at = offset + 4 - start
                if length > 4:
                    first_byte = data[offset + 4]
                break
            header_format.append(f"HH{_align(length) - 4}x")
            expected += (length, kind)
            if kind == NFQA_PACKET_HDR:
                header_at = offset + 4 - start
                packet_id, _hw_protocol, hook = NFQNL_PACKET_HDR.unpack_from(data, offset + 4)
            elif kind == NFQA_MARK:
                mark_at, mark = offset + 4 - start, U32.unpack_from(data, offset + 4)[0]
            offset += _align(length)
        if not packet_id:
            raise NetlinkError(errno.EPROTO, "nfnetlink_queue packet message without NFQA_PACKET_HDR")
        self._headers = None
        if payload_at is not None and first_byte and (mark_at is None or mark_at > header_at):
            values, at = f"!{header_at}xI2xB", header_at + 7
            if mark_at is not None:
                values, at = values + f"{mark_at - at}xI", mark_at + 4
            self._values = struct.Struct(values + f"{payload_at - at}xB")
            self._headers = struct.Struct("".join(header_format))
            self._expected = tuple(expected)
            self._size = max(self._headers.size, self._values.size)
            self._has_mark = mark_at is not None
        return packet_id, hook, mark, first_byte


_QUEUED_PACKET = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET   # a queued packet's netlink message type


class QueuedBatchColumns:
    """(ids, hooks, marks, first payload bytes) of a whole recvmmsg batch of queued packets, in
    two struct unpacks for all of them; None when any datagram is laid out unlike the first.

    Datagram i sits at i * slot_size of the batch's view. Packets of one kind come laid out
    alike (see QueuedPacketSummary), so the first datagram's layout is learned and every
    datagram's attribute headers are checked against it, column by column; the per-packet
    work left in Python is none.
    """

    def __init__(self):
        self._expected: tuple[tuple[int, int], ...] = ()     # (field index, value) every record must have
        self._fields = 0                                      # fields per record
        self._at: tuple[int, int, int, int] = (0, 0, 0, 0)    # field index of id, hook, mark (-1), first byte
        self._layout = ""                                    # the record's format, from the message's start
        self._structs: dict[tuple[int, int], tuple[struct.Struct, struct.Struct]] = {}

    def __call__(self, view, lengths: list[int], slot_size: int):
        if self._layout:
            found = self._read(view, lengths, slot_size)
            if found is not None:
                return found
        # A flow of another kind (another hook, a mark or none) starts: its layout is learned.
        return self._read(view, lengths, slot_size) if self._learn(view, lengths[0]) else None

    def _read(self, view, lengths: list[int], slot_size: int):
        count = len(lengths)
        key = (count, slot_size)
        structs = self._structs.get(key)
        if structs is None:
            structs = self._structs[key] = self._build(count, slot_size)
        headers, records = structs
        if headers.size > len(view) or records.size > len(view):
            return None
        header_fields = headers.unpack_from(view)
        if header_fields[1::2].count(_QUEUED_PACKET) != count or list(header_fields[0::2]) != lengths:
            return None
        values = records.unpack_from(view)
        step = self._fields
        for index, value in self._expected:
            if values[index::step].count(value) != count:
                return None
        id_at, hook_at, mark_at, first_at = self._at
        marks = values[mark_at::step] if mark_at >= 0 else (0,) * count
        return values[id_at::step], values[hook_at::step], marks, values[first_at::step]

    def _build(self, count: int, slot_size: int) -> tuple[struct.Struct, struct.Struct]:
        header_gap = slot_size - 6
        headers = struct.Struct("=" + f"IH{header_gap}x" * (count - 1) + "IH")
        layout = self._layout
        record_size = struct.calcsize("!" + layout)
        gap = slot_size - record_size
        records = struct.Struct("!" + f"{layout}{gap}x" * (count - 1) + layout)
        return headers, records

    def _learn(self, view, length: int) -> bool:
        """The layout of the datagram at the start of view; False when it is not one queued packet."""
        if length < NLMSGHDR.size + NFGENMSG.size:
            return False
        msg_len, msg_type = _LENGTH_AND_TYPE(view, 0)
        if msg_len != length or msg_type != _QUEUED_PACKET:
            return False
        layout = [f"{NLMSGHDR.size + NFGENMSG.size}x"]
        expected, field = [], 0
        id_at = hook_at = mark_at = first_at = -1
        offset = NLMSGHDR.size + NFGENMSG.size
        while offset + 4 <= length:
            # Read big-endian, like the values: a header's expected value is whatever this one holds.
            attr_length, kind = struct.unpack_from("!HH", view, offset)
            native_length, native_kind = NLATTR.unpack_from(view, offset)
            if native_length < 4 or offset + native_length > length:
                return False
            if native_kind == NFQA_PAYLOAD:
                if native_length <= 4:
                    return False
                layout.append("2xHB")
                expected.append((field, kind))
                first_at = field + 1
                break
            padded = _align(native_length)
            layout.append("HH")
            expected += [(field, attr_length), (field + 1, kind)]
            field += 2
            if native_kind == NFQA_PACKET_HDR and native_length >= 4 + NFQNL_PACKET_HDR.size:
                layout.append(f"I2xB{padded - 4 - NFQNL_PACKET_HDR.size}x")
                id_at, hook_at = field, field + 1
                field += 2
            elif native_kind == NFQA_MARK and native_length == 8:
                layout.append("I")
                mark_at = field
                field += 1
            elif padded > 4:
                layout.append(f"{padded - 4}x")
            offset += padded
        if id_at < 0 or first_at < 0:
            return False
        self._layout = "".join(layout)
        self._fields = first_at + 1
        self._expected = tuple(expected)
        self._at = (id_at, hook_at, mark_at, first_at)
        self._structs.clear()
        return True


# -- nfnetlink_log -----------------------------------------------------------

def log_config_cmd(group: int, command: int, pf: int = socket.AF_UNSPEC, seq: int = 0) -> bytes:
    return message(NFNL_SUBSYS_ULOG, NFULNL_MSG_CONFIG, group,
                   attribute(NFULA_CFG_CMD, NFULNL_CONFIG_CMD.pack(command)),
                   family=pf, flags=NLM_F_REQUEST | NLM_F_ACK, seq=seq)


def log_config_params(group: int, *, copy_range: int, buffer_size: int, flush_centiseconds: int,
                      threshold: int, seq: int = 0) -> bytes:
    attrs = (attribute(NFULA_CFG_MODE, NFULNL_CONFIG_MODE.pack(copy_range, NFULNL_COPY_PACKET))
             + attribute(NFULA_CFG_NLBUFSIZ, U32.pack(buffer_size))
             + attribute(NFULA_CFG_TIMEOUT, U32.pack(flush_centiseconds))
             + attribute(NFULA_CFG_QTHRESH, U32.pack(threshold))
             + attribute(NFULA_CFG_FLAGS, U16.pack(NFULNL_CFG_F_SEQ)))
    return message(NFNL_SUBSYS_ULOG, NFULNL_MSG_CONFIG, group, attrs,
                   flags=NLM_F_REQUEST | NLM_F_ACK, seq=seq)


def parse_log_packet(data, body: int, end: int) -> NetfilterPacket:
    hw_protocol = hook = mark = indev = outdev = 0
    log_seq = -1
    timestamp = None
    payload = b""
    for kind, value in iter_attributes(data, body + NFGENMSG.size, end):
        if kind == NFULA_PACKET_HDR:
            hw_protocol, hook = NFULNL_PACKET_HDR.unpack_from(value)
        elif kind == NFULA_PAYLOAD:
            payload = bytes(value)
        elif kind == NFULA_MARK:
            mark = U32.unpack_from(value)[0]
        elif kind == NFULA_IFINDEX_INDEV:
            indev = U32.unpack_from(value)[0]
        elif kind == NFULA_IFINDEX_OUTDEV:
            outdev = U32.unpack_from(value)[0]
        elif kind == NFULA_TIMESTAMP:
            timestamp = TIMESTAMP.unpack_from(value)
        elif kind == NFULA_SEQ:
            log_seq = U32.unpack_from(value)[0]
    return NetfilterPacket(0, hw_protocol, hook, mark, indev, outdev, timestamp, payload, 0, len(payload), log_seq)


# -- many datagrams per syscall ------------------------------------------------

class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.POINTER(IoVec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t), ("flags", ctypes.c_int)]


class MMsgHdr(ctypes.Structure):
    _fields_ = [("header", MsgHdr), ("length", ctypes.c_uint)]


MSG_TRUNC = 0x20
# The largest datagram nfnetlink_queue sends: one packet's message, its copied
# bytes (at most MAX_COPY) plus attributes that stay well under a page.
QUEUE_DATAGRAM_SIZE = MAX_COPY + 1 + 4096


def _libc_recvmmsg():
    try:
        function = ctypes.CDLL(None, use_errno=True).recvmmsg
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p)
    function.restype = ctypes.c_int
    return function


class DatagramBatchReader:
    """recvmmsg(2): up to `slots` netlink datagrams in one system call.

    Each datagram lands in its own slot of one anonymous mapping; only the
    pages a datagram touches become resident, so full-size slots cost little.
    """

    _recvmmsg = staticmethod(_libc_recvmmsg()) if hasattr(socket, "AF_NETLINK") else None

    def __init__(self, fd: int, slot_size: int, slots: int = 64):
        self.fd, self.slots = fd, slots
        # Whole pages, so that each datagram starts on a page of its own.
        self.slot_size = slot_size = mmap.PAGESIZE * -(-slot_size // mmap.PAGESIZE)
        self.memory = mmap.mmap(-1, slots * slot_size)
        self.view = memoryview(self.memory)
        self._anchor = ctypes.c_char.from_buffer(self.memory)
        base = ctypes.addressof(self._anchor)
        self._iovecs = (IoVec * slots)(*[IoVec(base + i * slot_size, slot_size) for i in range(slots)])
        self._headers = (MMsgHdr * slots)()
        for i in range(slots):
            self._headers[i].header.iov = ctypes.pointer(self._iovecs[i])
            self._headers[i].header.iovlen = 1
        # The headers as 32-bit words: each datagram's length and flags are every stride-th word.
        self._words = memoryview(self._headers).cast("B").cast("I")
        self._stride = ctypes.sizeof(MMsgHdr) // 4
        self._length_word = MMsgHdr.length.offset // 4
        self._flags_word = (MMsgHdr.header.offset + MsgHdr.flags.offset) // 4

    @classmethod
    def available(cls) -> bool:
        return cls._recvmmsg is not None

    def receive(self, count: int) -> list[int]:
        """The length of each datagram read, without blocking; [] when none waits.

        Datagram i starts at byte i * slot_size of `view`. Raises OSError
        (e.g. ENOBUFS) as recv would.
        """
        received = self._recvmmsg(self.fd, ctypes.addressof(self._headers), min(count, self.slots),
                                  socket.MSG_DONTWAIT, None)
        if received < 0:
            code = ctypes.get_errno()
            if code in (errno.EAGAIN, errno.EWOULDBLOCK):
                return []
            raise OSError(code, os.strerror(code))
        stride = self._stride
        lengths = self._words[self._length_word:received * stride:stride].tolist()
        # A cut datagram fills its slot; only then are the flags worth reading.
        if lengths and max(lengths) >= self.slot_size and \
                any(flags & MSG_TRUNC for flags in self._words[self._flags_word:received * stride:stride].tolist()):
            raise NetlinkError(errno.EMSGSIZE, f"a netlink datagram was larger than {self.slot_size} bytes")
        return lengths

    def close(self) -> None:
        self._words.release()
        self.view.release()
        del self._anchor
        try:
            self.memory.close()
        except BufferError:
            # A view of a datagram is still alive somewhere; the mapping goes with it.
            pass


# -- the socket --------------------------------------------------------------

class NetfilterSocket:
    """A NETLINK_NETFILTER socket that reads many messages per wake-up.

    The kernel sends each queued packet as its own datagram, so after one
    blocking wait the socket is drained with recvmmsg (or, without it,
    non-blocking reads into a reused buffer). Verdicts for many packets go
    out concatenated in one send().
    """

    def __init__(self, receive_buffer: int = 8 * 1024 * 1024, largest_datagram: int = QUEUE_DATAGRAM_SIZE,
                 datagrams_per_read: int = 64):
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        except PermissionError as exc:
            raise PermissionError(exc.errno, "opening a netfilter netlink socket needs CAP_NET_ADMIN") from exc
        self.sock.bind((0, 0))
        self._grow_receive_buffer(receive_buffer)
        # Any socket asking for receive timestamps makes the kernel stamp every arriving
        # packet (as a packet capture's socket does), and then nfnetlink_queue hands the
        # stamp up (NFQA_TIMESTAMP); netlink itself delivers no timestamp to this socket.
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP_OLD, 1)
        self._buffer = bytearray(max(256 * 1024, largest_datagram))
        self._view = memoryview(self._buffer)
        self._batches = (DatagramBatchReader(self.sock.fileno(), largest_datagram, datagrams_per_read)
                         if DatagramBatchReader.available() else None)
        self._stash: list[tuple[bytes, int, int]] = []
        self._last_lengths: list[int] = []
        # True once a read found the socket empty, until wait() sees it readable:
        # until then, reading again would only cost a system call.
        self.drained = False
        self._seq = 0
        self.enobufs = 0
        self.verdict_errors = 0

    def _grow_receive_buffer(self, size: int) -> None:
        # SO_RCVBUFFORCE passes net.core.rmem_max for root; plain SO_RCVBUF otherwise.
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, size)  # SO_RCVBUFFORCE
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)

    def fileno(self) -> int:
        return self.sock.fileno()

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def request(self, build) -> None:
        """Send a request built by build(seq) and wait for its acknowledgement.

        Packets that arrive meanwhile are kept for the next read_messages():
        each of them waits in the kernel for a verdict.
        """
        seq = self.next_seq()
        self.sock.send(build(seq))
        while True:
            try:
                length = self.sock.recv_into(self._buffer)
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.enobufs += 1
                    continue
                raise
            acknowledged = False
            for msg_type, _flags, msg_seq, body, end in iter_messages(self._buffer, length):
                if msg_type == NLMSG_ERROR and msg_seq == seq:
                    code = NLMSGERR_CODE.unpack_from(self._buffer, body)[0]
                    if code:
                        raise NetlinkError(-code, f"netfilter refused the request: {os.strerror(-code)}")
                    acknowledged = True
                elif msg_type & 0xFF00:
                    start = body - NLMSGHDR.size
                    self._stash.append((bytes(self._buffer[start:end]), NLMSGHDR.size, end - start))
            if acknowledged:
                return

    def send(self, data: bytes) -> None:
        if data:
            self.sock.send(data)

    def send_messages(self, messages: list[bytes]) -> None:
        """Whole messages, as few send() calls as keep each datagram within MAX_SEND."""
        chunk, size = [], 0
        for message in messages:
            if chunk and size + len(message) > MAX_SEND:
                self.sock.send(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(message)
            size += len(message)
        if chunk:
            self.sock.send(b"".join(chunk))

    def wait(self, timeout: float | None) -> bool:
        if self._stash:
            return True
        readable = bool(select.select([self.sock], [], [], timeout)[0])
        if readable:
            self.drained = False
        return readable

    def read_messages(self, parse, limit: int) -> list[NetfilterPacket]:
        """Everything waiting (up to about `limit` packets) without blocking.

        ENOBUFS means the kernel dropped messages because the receive buffer was
        full; it is counted, and the caller recovers the packets it lost. An
        error answer to a verdict (a packet id the kernel no longer holds) is
        counted in `verdict_errors`.
        """
        packets: list[NetfilterPacket] = [parse(data, body, end) for data, body, end in self._stash]
        self._stash.clear()
        if self._batches is not None:
            return self._read_batches(parse, limit, packets)
        buffer, view = self._buffer, self._view
        receive = self.sock.recv_into
        while len(packets) < limit:
            try:
                length = receive(buffer, 0, socket.MSG_DONTWAIT)
            except BlockingIOError:
                self.drained = True
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.enobufs += 1
                    continue
                raise
            self._parse_datagram(view, 0, length, parse, packets)
        return packets

    def _read_batches(self, parse, limit: int, packets: list) -> list[NetfilterPacket]:
        slots = self._batches.slots
        while len(packets) < limit:
            wanted = limit - len(packets)
            lengths = self._receive_batch(wanted)
            self._parse_batch(lengths, parse, packets)
            if len(lengths) < min(wanted, slots):
                break
        return packets

    def read_columns(self, columns: QueuedBatchColumns, parse, limit: int):
        """One read of up to `limit` queued packets, without blocking: columns()'s (ids, hooks,
        marks, first bytes) when every datagram read is a queued packet laid out alike, else
        a list of the packets parsed one by one by `parse`."""
        if self._stash or self._batches is None:
            return self.read_messages(parse, limit)
        lengths = self._receive_batch(limit)
        if not lengths:
            return []
        found = columns(self._batches.view, lengths, self._batches.slot_size)
        return found if found is not None else self._parse_batch(lengths, parse, [])

    def parse_last_read(self, parse) -> list[NetfilterPacket]:
        """The datagrams of the last read_columns() again, each parsed by `parse`."""
        return self._parse_batch(self._last_lengths, parse, [])

    def _receive_batch(self, wanted: int) -> list[int]:
        """One recvmmsg of up to `wanted` datagrams; their lengths. Sets `drained` when it read fewer."""
        while True:
            try:
                lengths = self._batches.receive(wanted)
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.enobufs += 1
        if len(lengths) < min(wanted, self._batches.slots):
            self.drained = True
        self._last_lengths = lengths
        return lengths

    def _parse_batch(self, lengths: list[int], parse, packets: list) -> list[NetfilterPacket]:
        view, header, size = self._batches.view, _LENGTH_AND_TYPE, self._batches.slot_size
        keep = packets.append
        start = 0
        for length in lengths:
            # The kernel sends each queued packet as a datagram of its own.
            msg_len, msg_type = header(view, start)
            if msg_type & 0xFF00 and msg_len == length:
                keep(parse(view, start + 16, start + length))
            else:
                self._parse_datagram(view, start, length, parse, packets)
            start += size
        return packets

    def _parse_datagram(self, data, start: int, length: int, parse, packets: list) -> None:
        offset, stop = start, start + length
        while offset + 16 <= stop:
            msg_len, msg_type, _flags, _seq, _pid = NLMSGHDR.unpack_from(data, offset)
            end = offset + msg_len
            if msg_len < 16 or end > stop:
                raise NetlinkError(errno.EPROTO, f"truncated netlink message at byte {offset - start}")
            if msg_type & 0xFF00:
                packets.append(parse(data, offset + 16, end))
            elif msg_type == NLMSG_ERROR and NLMSGERR_CODE.unpack_from(data, offset + 16)[0]:
                self.verdict_errors += 1
            offset = (end + 3) & ~3

    def close(self) -> None:
        self.sock.close()
        if self._batches is not None:
            self._batches.close()
        self._view.release()
