"""The columns of new records, computed at append: each packet's header
summary (one by one, or with numpy for a whole batch) and its address fields."""

from __future__ import annotations

import operator
from typing import NamedTuple, Sequence

import numpy as np

from divertgui.engine.address import Address, Layer
from divertgui.engine.header_fields import (
    IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, IPV6_EXTENSION_HEADERS,
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
    if n < 20:
        return _NOTHING
    version = raw[0] >> 4
    if version == 4:
        ihl = (raw[0] & 15) * 4
        if ihl < 20 or ihl > n:
            return _NOTHING
        protocol = raw[9]
        fragment = (raw[6] & 0x3F) or raw[7]
        plain = ihl == 20 and ((raw[2] << 8) | raw[3]) == n and not fragment
        src, dst = raw[12:16], raw[16:20]
        at = ihl
    elif version == 6:
        if n < 40:
            return _NOTHING
        protocol = raw[6]
        plain = ((raw[4] << 8) | raw[5]) + 40 == n and protocol not in IPV6_EXTENSION_HEADERS
        src, dst = raw[8:24], raw[24:40]
        layout = parse_headers(raw)
        protocol, fragment = layout.protocol, layout.fragment
        at = layout.payload_offset - layout.transport_len
    else:
        return _NOTHING
    sport = dport = 0
    if protocol in (IPPROTO_TCP, IPPROTO_UDP) and not fragment and at + 4 <= n:
        sport = (raw[at] << 8) | raw[at + 1]
        dport = (raw[at + 2] << 8) | raw[at + 3]
    if plain:
        if protocol == IPPROTO_TCP:
            plain = at + 20 <= n and 20 <= (raw[at + 12] >> 4) * 4 <= n - at
        elif protocol == IPPROTO_UDP:
            plain = at + 8 <= n and ((raw[at + 4] << 8) | raw[at + 5]) == n - at
        elif protocol == (IPPROTO_ICMP if version == 4 else IPPROTO_ICMPV6):
            plain = at + 8 <= n
        else:
            plain = False
    conversation = _conversation(_endpoint(src, sport), _endpoint(dst, dport), version << 8 | protocol)
    return Summary(version, protocol, sport, dport, conversation, bool(plain))


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


_OUTBOUND, _LOOPBACK, _IMPOSTOR, _IPV6, _SNIFFED, _IP_CK, _TCP_CK, _UDP_CK, _FORWARD, _PLAIN = (
    int(f) for f in (Flags.OUTBOUND, Flags.LOOPBACK, Flags.IMPOSTOR, Flags.IPV6, Flags.SNIFFED, Flags.IP_CHECKSUM,
                     Flags.TCP_CHECKSUM, Flags.UDP_CHECKSUM, Flags.FORWARD_LAYER, Flags.PLAIN))


_ADDRESS_FIELDS = operator.attrgetter("timestamp", "if_idx", "sub_if_idx", "outbound", "loopback", "impostor",
                                       "ipv6", "sniffed", "ip_checksum", "tcp_checksum", "udp_checksum", "layer")
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
_HEAD_BYTES = 56


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
    version = head[:, 0] >> 4
    v4 = (version == 4) & (n >= 20) & ((head[:, 0] & 15) == 5)
    v6 = (version == 6) & (n >= 40)
    protocol = np.where(v4, head[:, 9], head[:, 6])
    v6 &= ~np.isin(protocol, _IPV6_EXTENSION_LIST)
    simple = v4 | v6
    at = np.where(v4, 20, 40)
    fragment = v4 & (((head[:, 6] & 0x3F) | head[:, 7]) != 0)
    plain = np.where(v4, ((head[:, 2] << 8) | head[:, 3]) == n, ((head[:, 4] << 8) | head[:, 5]) + 40 == n)
    plain &= ~fragment

    def byte(offset):
        return np.where(v4, head[:, 20 + offset], head[:, 40 + offset])

    ported = ((protocol == 6) | (protocol == 17)) & ~fragment & (at + 4 <= n)
    sport = np.where(ported, (byte(0) << 8) | byte(1), 0)
    dport = np.where(ported, (byte(2) << 8) | byte(3), 0)
    data_offset = (byte(12) >> 4) * 4
    tcp_plain = (at + 20 <= n) & (20 <= data_offset) & (data_offset <= n - at)
    udp_plain = (at + 8 <= n) & (((byte(4) << 8) | byte(5)) == n - at)
    icmp = np.where(v4, protocol == 1, protocol == 58)
    plain &= np.where(protocol == 6, tcp_plain, np.where(protocol == 17, udp_plain, icmp & (at + 8 <= n)))

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

    a, b = endpoint(12, 8, sport), endpoint(16, 24, dport)
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
