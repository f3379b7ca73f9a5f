"""The columns of new records, computed at append: each packet's header
summary (one by one, or with numpy for a whole batch) and its address fields."""

from __future__ import annotations

import operator
from typing import NamedTuple, Sequence

import numpy as np

from divertgui.engine.address import Address, Layer
from divertgui.engine.header_fields import (
    ICMP_HEADER_LEN, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, IPV4, IPV4_HEADER_LEN, IPV6,
    IPV6_EXTENSION_HEADERS, IPV6_HEADER_LEN, TCP, TCP_HEADER_MIN, UDP, UDP_HEADER_LEN, field_value,
)
from divertgui.engine.headers import parse_headers
from divertgui.engine.store_record import Flags


class Summary(NamedTuple):
    """What the columns record about a packet's headers."""

    ip_version: int      # 0 when not IPv4/IPv6
    protocol: int        # transport protocol number (after IPv6 extension headers)
    src_port: int        # 0 unless TCP/UDP with a readable header
    dst_port: int
    conversation: int    # the same for both directions of a flow
    plain: bool


_NOTHING = Summary(0, 0, 0, 0, 0, False)
_IPV6_EXTENSION_LIST = sorted(IPV6_EXTENSION_HEADERS)


def summarise(raw: bytes) -> Summary:
    n = len(raw)
    if n < IPV4_HEADER_LEN:
        return _NOTHING
    version = field_value(raw, 0, IPV4["version"])
    if version == 4:
        ihl = field_value(raw, 0, IPV4["hdr_len"]) * 4
        if ihl < IPV4_HEADER_LEN or ihl > n:
            return _NOTHING
        protocol = field_value(raw, 0, IPV4["protocol"])
        fragment = field_value(raw, 0, IPV4["mf"]) or field_value(raw, 0, IPV4["frag_offset"])
        plain = ihl == IPV4_HEADER_LEN and field_value(raw, 0, IPV4["length"]) == n and not fragment
        src, dst = _address_bytes(raw, IPV4)
        at = ihl
    elif version == 6:
        if n < IPV6_HEADER_LEN:
            return _NOTHING
        plain = field_value(raw, 0, IPV6["length"]) + IPV6_HEADER_LEN == n \
            and field_value(raw, 0, IPV6["next_hdr"]) not in IPV6_EXTENSION_HEADERS
        src, dst = _address_bytes(raw, IPV6)
        layout = parse_headers(raw)
        protocol, fragment = layout.protocol, layout.fragment
        at = layout.payload_offset - layout.transport_len
    else:
        return _NOTHING
    sport = dport = 0
    if protocol in (IPPROTO_TCP, IPPROTO_UDP) and not fragment and at + _PORTS_END <= n:
        sport, dport = field_value(raw, at, TCP["src_port"]), field_value(raw, at, TCP["dst_port"])
    if plain:
        if protocol == IPPROTO_TCP:
            plain = at + TCP_HEADER_MIN <= n and TCP_HEADER_MIN <= field_value(raw, at, TCP["hdr_len"]) * 4 <= n - at
        elif protocol == IPPROTO_UDP:
            plain = at + UDP_HEADER_LEN <= n and field_value(raw, at, UDP["length"]) == n - at
        elif protocol == (IPPROTO_ICMP if version == 4 else IPPROTO_ICMPV6):
            plain = at + ICMP_HEADER_LEN <= n
        else:
            plain = False
    conversation = _conversation(_endpoint(src, sport), _endpoint(dst, dport), version << 8 | protocol)
    return Summary(version, protocol, sport, dport, conversation, bool(plain))


def _address_bytes(raw: bytes, header: dict) -> tuple[bytes, bytes]:
    return tuple(raw[header[name].offset:header[name].offset + header[name].size] for name in ("src_addr", "dst_addr"))


# A conversation id mixes both endpoints in an order-free way, in 64-bit
# arithmetic that numpy does for a whole batch as Python does for one packet.
_MASK64 = (1 << 64) - 1
_MIX = 0x9E3779B97F4A7C15
_MIX_PAIR = 0xC2B2AE3D27D4EB4F


def _endpoint(address: bytes, port: int) -> int:
    value = 0
    for at in range(0, len(address), 4):
        value = (value * _MIX + int.from_bytes(address[at:at + 4], "big")) & _MASK64
    return (value * _MIX + port) & _MASK64


def _conversation(a: int, b: int, kind: int) -> int:
    low, high = (a, b) if a <= b else (b, a)
    value = (kind * _MIX_PAIR + low) & _MASK64
    value = (value * _MIX_PAIR + high) & _MASK64
    return ((value * _MIX_PAIR) & _MASK64) >> 32


_OUTBOUND, _LOOPBACK, _IMPOSTOR, _IPV6, _SNIFFED, _IP_CK, _TCP_CK, _UDP_CK, _FORWARD, _PLAIN, _UNKNOWN = (
    int(f) for f in (Flags.OUTBOUND, Flags.LOOPBACK, Flags.IMPOSTOR, Flags.IPV6, Flags.SNIFFED, Flags.IP_CHECKSUM,
                     Flags.TCP_CHECKSUM, Flags.UDP_CHECKSUM, Flags.FORWARD_LAYER, Flags.PLAIN,
                     Flags.DIRECTION_UNKNOWN))


_ADDRESS_FIELDS = operator.attrgetter("timestamp", "if_idx", "sub_if_idx", "outbound", "loopback", "impostor",
                                       "ipv6", "sniffed", "ip_checksum", "tcp_checksum", "udp_checksum", "layer",
                                       "direction_known")
_ADDRESS_BITS = np.array([_OUTBOUND, _LOOPBACK, _IMPOSTOR, _IPV6, _SNIFFED, _IP_CK, _TCP_CK, _UDP_CK], np.int64)


def address_columns(addresses: Sequence[Address], block: np.ndarray) -> None:
    """timestamp, if_idx, sub_if_idx and the address bits of `flags`, for a batch."""
    if not len(block):
        return
    values = np.array(list(map(_ADDRESS_FIELDS, addresses)), np.int64)
    block["timestamp"] = values[:, 0]
    block["if_idx"] = values[:, 1]
    block["sub_if_idx"] = values[:, 2]
    flags = (values[:, 3:11] != 0) @ _ADDRESS_BITS
    flags |= np.where(values[:, 11] == int(Layer.NETWORK_FORWARD), _FORWARD, 0)
    flags |= np.where(values[:, 12] == 0, _UNKNOWN, 0)
    block["flags"] = flags


# Below this many packets a batch is summarised packet by packet: numpy's
# cost per call outweighs its cost per packet.
VECTOR_ROWS = 96


def summaries_one_by_one(raws: Sequence[bytes], block: np.ndarray) -> None:
    summaries = [summarise(raw) for raw in raws]
    if not summaries:
        return
    columns = np.array(summaries, np.int64)
    block["ip_version"] = columns[:, 0]
    block["protocol"] = columns[:, 1]
    block["src_port"] = columns[:, 2]
    block["dst_port"] = columns[:, 3]
    block["conversation"] = columns[:, 4]
    block["flags"] |= np.where(columns[:, 5] != 0, _PLAIN, 0).astype(np.uint16)


# Bytes of a packet's start read for its summary: an IPv6 header and a TCP header's data offset.
_HEAD_BYTES = IPV6_HEADER_LEN + TCP["hdr_len"].offset + 1
# TCP and UDP put their ports alike, in the header's first bytes.
_PORTS_END = TCP["dst_port"].offset + TCP["dst_port"].size


def _field_column(head: np.ndarray, at, field) -> np.ndarray:
    """A header field's value in each row of `head`, the header starting at byte `at` (one or per row)."""
    start = at + field.offset
    value = np.zeros(len(head), np.int64)
    for k in range(field.size):
        value = value << 8 | (head[:, start + k] if np.ndim(start) == 0 else head[np.arange(len(head)), start + k])
    return value >> field.shift & field.mask


def summary_columns(raws: Sequence[bytes], blob: bytes, lengths: np.ndarray, block: np.ndarray) -> None:
    """ip_version, protocol, ports, conversation and the PLAIN bit, as summarise() gives them.

    IPv4 without options and IPv6 without extension headers are read with
    numpy for the whole batch; any other packet goes through summarise().
    """
    count = len(lengths)
    if not count:
        return
    data = np.frombuffer(blob, np.uint8)
    starts = np.cumsum(lengths) - lengths
    positions = np.minimum(starts[:, None] + np.arange(_HEAD_BYTES), max(len(data) - 1, 0))
    head = data[positions].astype(np.int64) if len(data) else np.zeros((count, _HEAD_BYTES), np.int64)
    # Bytes beyond a packet's end belong to the next one: every read below is guarded by a length test.
    head[np.arange(_HEAD_BYTES) >= lengths[:, None]] = 0
    n = lengths

    def column(at, field):
        return _field_column(head, at, field)

    version = column(0, IPV4["version"])
    v4 = (version == 4) & (n >= IPV4_HEADER_LEN) & (column(0, IPV4["hdr_len"]) * 4 == IPV4_HEADER_LEN)
    v6 = (version == 6) & (n >= IPV6_HEADER_LEN)
    protocol = np.where(v4, column(0, IPV4["protocol"]), column(0, IPV6["next_hdr"]))
    v6 &= ~np.isin(protocol, _IPV6_EXTENSION_LIST)
    simple = v4 | v6
    at = np.where(v4, IPV4_HEADER_LEN, IPV6_HEADER_LEN)
    fragment = v4 & ((column(0, IPV4["mf"]) | column(0, IPV4["frag_offset"])) != 0)
    plain = np.where(v4, column(0, IPV4["length"]) == n, column(0, IPV6["length"]) + IPV6_HEADER_LEN == n)
    plain &= ~fragment

    ported = ((protocol == IPPROTO_TCP) | (protocol == IPPROTO_UDP)) & ~fragment & (at + _PORTS_END <= n)
    sport = np.where(ported, column(at, TCP["src_port"]), 0)
    dport = np.where(ported, column(at, TCP["dst_port"]), 0)
    data_offset = column(at, TCP["hdr_len"]) * 4
    tcp_plain = (at + TCP_HEADER_MIN <= n) & (TCP_HEADER_MIN <= data_offset) & (data_offset <= n - at)
    udp_plain = (at + UDP_HEADER_LEN <= n) & (column(at, UDP["length"]) == n - at)
    icmp = np.where(v4, protocol == IPPROTO_ICMP, protocol == IPPROTO_ICMPV6)
    plain &= np.where(protocol == IPPROTO_TCP, tcp_plain,
                      np.where(protocol == IPPROTO_UDP, udp_plain, icmp & (at + ICMP_HEADER_LEN <= n)))

    words = head.astype(np.uint64)
    mix = np.uint64(_MIX)

    def address_word(at):
        return words[:, at] << np.uint64(24) | words[:, at + 1] << np.uint64(16) \
            | words[:, at + 2] << np.uint64(8) | words[:, at + 3]

    def endpoint(v4_at, v6_at, port):
        v6_value = np.zeros(count, np.uint64)
        for word in range(4):
            v6_value = v6_value * mix + address_word(v6_at + 4 * word)
        return np.where(v4, address_word(v4_at), v6_value) * mix + port.astype(np.uint64)

    a = endpoint(IPV4["src_addr"].offset, IPV6["src_addr"].offset, sport)
    b = endpoint(IPV4["dst_addr"].offset, IPV6["dst_addr"].offset, dport)
    low, high = np.minimum(a, b), np.maximum(a, b)
    pair = np.uint64(_MIX_PAIR)
    kind = (version << 8 | protocol).astype(np.uint64)
    conversation = ((kind * pair + low) * pair + high) * pair >> np.uint64(32)

    block["ip_version"] = np.where(simple, version, 0)
    block["protocol"] = np.where(simple, protocol, 0)
    block["src_port"] = sport
    block["dst_port"] = dport
    block["conversation"] = np.where(simple, conversation, 0)
    block["flags"] |= np.where(simple & plain, _PLAIN, 0).astype(np.uint16)
    for i in np.flatnonzero(~simple).tolist():
        s = summarise(raws[i])
        record = block[i]
        record["ip_version"], record["protocol"] = s.ip_version, s.protocol
        record["src_port"], record["dst_port"], record["conversation"] = s.src_port, s.dst_port, s.conversation
        if s.plain:
            record["flags"] |= _PLAIN
