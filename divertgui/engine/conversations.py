"""Conversations and endpoints of a capture, as Wireshark's Statistics show them,
computed with numpy from the store's columns and the packets' address bytes;
and the filter texts that select a conversation or an endpoint.

A conversation is an address pair, a transport protocol and (TCP, UDP) a port
pair, both directions together; side A is the source of its first packet.
Rows that are not IPv4 or IPv6 belong to no conversation and are counted in
`skipped`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import TYPE_CHECKING

import numpy as np

from divertgui.engine.address_text import IPV4_MAPPED
from divertgui.engine.display_rows import Rows, address_words
from divertgui.engine import header_fields as fields
from divertgui.engine.headers import parse_headers

if TYPE_CHECKING:
    from divertgui.engine.store import CaptureStore

TCP, UDP, ICMP, ICMPV6 = fields.IPPROTO_TCP, fields.IPPROTO_UDP, fields.IPPROTO_ICMP, fields.IPPROTO_ICMPV6
PROTOCOL_NAMES = {TCP: "TCP", UDP: "UDP", ICMP: "ICMP", ICMPV6: "ICMPv6"}
_SRC_ADDR = {4: fields.IPV4["src_addr"], 6: fields.IPV6["src_addr"]}
_DST_ADDR = {4: fields.IPV4["dst_addr"], 6: fields.IPV6["dst_addr"]}
_PORTS = {TCP: (fields.reader(fields.TCP["src_port"]), fields.reader(fields.TCP["dst_port"])),
          UDP: (fields.reader(fields.UDP["src_port"]), fields.reader(fields.UDP["dst_port"]))}


def protocol_name(protocol: int) -> str:
    return PROTOCOL_NAMES.get(protocol, str(protocol))


def address_text(version: int, high: int, low: int) -> str:
    """An address as the filter language writes it; IPv4 rows hold it IPv4-mapped."""
    if version == 4:
        return str(ipaddress.IPv4Address(int(low) & 0xFFFFFFFF))
    return str(ipaddress.IPv6Address((int(high) << 64) | int(low)))


# -- filter texts --------------------------------------------------------------

def _header(version: int) -> str:
    return "ip" if version == 4 else "ipv6"


def _transport(version: int, protocol: int) -> str:
    """The test that the packet carries `protocol`, and where its ports are (if any)."""
    if protocol in (TCP, UDP):
        return "tcp" if protocol == TCP else "udp"
    if (version, protocol) in ((4, ICMP), (6, ICMPV6)):
        return "icmp" if protocol == ICMP else "icmpv6"
    return f"protocol == {protocol}"


def flow_filter(version: int, protocol: int, src: str, sport: int, dst: str, dport: int) -> str:
    """One direction of a conversation: packets from src:sport to dst:dport."""
    ip = _header(version)
    tests = [f"{ip}.SrcAddr == {src}", f"{ip}.DstAddr == {dst}"]
    transport = _transport(version, protocol)
    if protocol in (TCP, UDP):
        tests += [f"{transport}.SrcPort == {sport}", f"{transport}.DstPort == {dport}"]
    else:
        tests.append(transport)
    return "(" + " and ".join(tests) + ")"


def conversation_filter(version: int, protocol: int, a: str, port_a: int, b: str, port_b: int,
                        direction: str | None = None) -> str:
    """Both directions of a conversation, or one: direction "a_to_b" or "b_to_a"."""
    there = flow_filter(version, protocol, a, port_a, b, port_b)
    back = flow_filter(version, protocol, b, port_b, a, port_a)
    if direction == "a_to_b":
        return there
    if direction == "b_to_a":
        return back
    if direction is not None:
        raise ValueError(f"direction must be None, 'a_to_b' or 'b_to_a', not {direction!r}")
    return there if there == back else f"{there} or {back}"


def excluding_filter(version: int, protocol: int, a: str, port_a: int, b: str, port_b: int) -> str:
    """Every packet except those of the conversation.

    The language negates single tests only, and a negated test on a header
    the packet lacks is false; so the negation is written out (De Morgan)
    under a conditional that keeps every packet without those headers.
    """
    ip = _header(version)
    transport = _transport(version, protocol)
    guard = f"{ip} and {transport}"

    def differs(src, sport, dst, dport):
        tests = [f"{ip}.SrcAddr != {src}", f"{ip}.DstAddr != {dst}"]
        if protocol in (TCP, UDP):
            tests += [f"{transport}.SrcPort != {sport}", f"{transport}.DstPort != {dport}"]
        return "(" + " or ".join(tests) + ")"

    there, back = differs(a, port_a, b, port_b), differs(b, port_b, a, port_a)
    inner = there if there == back else f"{there} and {back}"
    return f"(({guard}) ? ({inner}) : true)"


def endpoint_filter(version: int, address: str) -> str:
    ip = _header(version)
    return f"{ip}.SrcAddr == {address} or {ip}.DstAddr == {address}"


# -- per-packet arrays -----------------------------------------------------------

@dataclasses.dataclass
class PacketFlows:
    """Per IP packet: where it went, what it carried, how long it was, when."""

    rows: np.ndarray
    version: np.ndarray
    protocol: np.ndarray
    src_high: np.ndarray
    src_low: np.ndarray
    dst_high: np.ndarray
    dst_low: np.ndarray
    src_port: np.ndarray
    dst_port: np.ndarray
    length: np.ndarray
    timestamp: np.ndarray
    skipped: int            # rows asked for that are not IPv4/IPv6


def _split(value: int) -> tuple[int, int]:
    return value >> 64, value & ((1 << 64) - 1)


def packet_flows(store: CaptureStore, rows: np.ndarray | None = None) -> PacketFlows:
    """The flows of `rows` (default: every row), addresses read in bulk for plain rows."""
    count = len(store)
    if rows is None:
        start, stop = 0, count
    else:
        rows = np.asarray(rows, np.int64)
        rows = rows[(rows >= 0) & (rows < count)]
        start, stop = (int(rows.min()), int(rows.max()) + 1) if len(rows) else (0, 0)
    span = Rows(store, start, stop)
    version = span.version.astype(np.int64)
    src_high, src_low = address_words(span, np.where(version == 4, _SRC_ADDR[4].offset, _SRC_ADDR[6].offset))
    dst_high, dst_low = address_words(span, np.where(version == 4, _DST_ADDR[4].offset, _DST_ADDR[6].offset))
    protocol = span.col("protocol").astype(np.int64)
    src_port, dst_port = span.col("src_port").astype(np.int64), span.col("dst_port").astype(np.int64)
    length = span.length
    picked = np.arange(stop - start) if rows is None else rows - start
    # The bulk reads speak for plain rows; the others (options, extension headers, edits) are parsed here.
    for i in picked[~span.plain[picked]].tolist():
        raw = store.raw(start + i)
        layout = parse_headers(raw)
        if layout is None:
            version[i] = 0
            continue
        src = fields.field_value(raw, 0, _SRC_ADDR[layout.version])
        dst = fields.field_value(raw, 0, _DST_ADDR[layout.version])
        if layout.version == 4:
            src, dst = IPV4_MAPPED | src, IPV4_MAPPED | dst
        (src_high[i], src_low[i]), (dst_high[i], dst_low[i]) = _split(src), _split(dst)
        version[i], protocol[i], length[i] = layout.version, layout.protocol, len(raw)
        if layout.transport in _PORTS:
            read_src, read_dst = _PORTS[layout.transport]
            src_port[i] = read_src(raw, layout.transport_offset)
            dst_port[i] = read_dst(raw, layout.transport_offset)
        else:
            src_port[i] = dst_port[i] = 0
    ip = version[picked] != 0
    picked = picked[ip]
    return PacketFlows(
        rows=picked + start, version=version[picked], protocol=protocol[picked],
        src_high=src_high[picked], src_low=src_low[picked], dst_high=dst_high[picked], dst_low=dst_low[picked],
        src_port=src_port[picked], dst_port=dst_port[picked], length=length[picked],
        timestamp=span.col("timestamp")[picked], skipped=int((~ip).sum()))


def _group_starts(keys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(order, starts): a stable sort by `keys` (first key most significant) and where each group begins."""
    order = np.lexsort(tuple(reversed(keys)))
    if not len(order):
        return order, np.zeros(0, np.int64)
    changed = np.zeros(len(order), bool)
    changed[0] = True
    for key in keys:
        ordered = key[order]
        changed[1:] |= ordered[1:] != ordered[:-1]
    return order, np.flatnonzero(changed)


def _less_or_equal(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> np.ndarray:
    """Lexicographic a <= b over columns."""
    result = np.ones(len(a[0]), bool)
    decided = np.zeros(len(a[0]), bool)
    for x, y in zip(a, b):
        result = np.where(~decided & (x != y), x < y, result)
        decided |= x != y
    return result


def _capture_start(store: CaptureStore) -> int:
    return store.value("timestamp", 0) if len(store) else 0


# -- conversations -----------------------------------------------------------------

@dataclasses.dataclass
class Conversations:
    """One entry per conversation, as arrays; side A sent the conversation's first packet."""

    version: np.ndarray
    protocol: np.ndarray
    a_high: np.ndarray
    a_low: np.ndarray
    port_a: np.ndarray
    b_high: np.ndarray
    b_low: np.ndarray
    port_b: np.ndarray
    packets: np.ndarray
    bytes: np.ndarray
    packets_a_to_b: np.ndarray
    bytes_a_to_b: np.ndarray
    packets_b_to_a: np.ndarray
    bytes_b_to_a: np.ndarray
    start: np.ndarray          # seconds since the capture's first packet
    duration: np.ndarray       # seconds
    first_row: np.ndarray
    skipped: int

    def __len__(self) -> int:
        return len(self.packets)

    def address_a(self, i: int) -> str:
        return address_text(int(self.version[i]), int(self.a_high[i]), int(self.a_low[i]))

    def address_b(self, i: int) -> str:
        return address_text(int(self.version[i]), int(self.b_high[i]), int(self.b_low[i]))

    def has_ports(self, i: int) -> bool:
        return int(self.protocol[i]) in (TCP, UDP)

    def _parts(self, i: int):
        return (int(self.version[i]), int(self.protocol[i]), self.address_a(i), int(self.port_a[i]),
                self.address_b(i), int(self.port_b[i]))

    def filter(self, i: int, direction: str | None = None) -> str:
        return conversation_filter(*self._parts(i), direction=direction)

    def excluding_filter(self, i: int) -> str:
        return excluding_filter(*self._parts(i))


def conversations(store: CaptureStore, rows: np.ndarray | None = None) -> Conversations:
    """The conversations of `rows` (the rows of a display filter, say), or of every row."""
    flows = packet_flows(store, rows)
    source_is_low = _less_or_equal((flows.src_high, flows.src_low, flows.src_port),
                                   (flows.dst_high, flows.dst_low, flows.dst_port))
    low = [np.where(source_is_low, s, d) for s, d in ((flows.src_high, flows.dst_high),
                                                       (flows.src_low, flows.dst_low),
                                                       (flows.src_port, flows.dst_port))]
    high = [np.where(source_is_low, d, s) for s, d in ((flows.src_high, flows.dst_high),
                                                        (flows.src_low, flows.dst_low),
                                                        (flows.src_port, flows.dst_port))]
    order, starts = _group_starts([flows.version, flows.protocol, *low, *high])
    first = order[starts]
    # A packet goes A -> B when it travels the way the conversation's first packet did.
    group_of = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(order))))
    forward = source_is_low[order] == source_is_low[first][group_of]
    length = flows.length[order]
    stamps = flows.timestamp[order]

    def total(values):
        return np.add.reduceat(values, starts) if len(starts) else np.zeros(0, np.int64)

    packets = total(np.ones(len(order), np.int64))
    forward_packets = total(forward.astype(np.int64))
    all_bytes = total(length)
    forward_bytes = total(np.where(forward, length, 0))
    begin = np.minimum.reduceat(stamps, starts) if len(starts) else np.zeros(0, np.int64)
    end = np.maximum.reduceat(stamps, starts) if len(starts) else np.zeros(0, np.int64)
    a_is_low = source_is_low[first]

    def side(a_side: bool, k: int):
        return np.where(a_is_low == a_side, low[k][first], high[k][first])

    return Conversations(
        version=flows.version[first], protocol=flows.protocol[first],
        a_high=side(True, 0), a_low=side(True, 1), port_a=side(True, 2),
        b_high=side(False, 0), b_low=side(False, 1), port_b=side(False, 2),
        packets=packets, bytes=all_bytes,
        packets_a_to_b=forward_packets, bytes_a_to_b=forward_bytes,
        packets_b_to_a=packets - forward_packets, bytes_b_to_a=all_bytes - forward_bytes,
        start=(begin - _capture_start(store)) / 1e9, duration=(end - begin) / 1e9,
        first_row=flows.rows[first], skipped=flows.skipped)


# -- endpoints ---------------------------------------------------------------------

@dataclasses.dataclass
class Endpoints:
    """One entry per address: the packets it took part in, what it sent (tx) and received (rx)."""

    version: np.ndarray
    high: np.ndarray
    low: np.ndarray
    packets: np.ndarray
    bytes: np.ndarray
    tx_packets: np.ndarray
    tx_bytes: np.ndarray
    rx_packets: np.ndarray
    rx_bytes: np.ndarray
    skipped: int

    def __len__(self) -> int:
        return len(self.packets)

    def address(self, i: int) -> str:
        return address_text(int(self.version[i]), int(self.high[i]), int(self.low[i]))

    def filter(self, i: int) -> str:
        return endpoint_filter(int(self.version[i]), self.address(i))


def endpoints(store: CaptureStore, rows: np.ndarray | None = None) -> Endpoints:
    flows = packet_flows(store, rows)
    n = len(flows.rows)
    version = np.concatenate([flows.version, flows.version])
    high = np.concatenate([flows.src_high, flows.dst_high])
    low = np.concatenate([flows.src_low, flows.dst_low])
    length = np.concatenate([flows.length, flows.length])
    sent = np.arange(2 * n) < n
    # A packet from an address to itself is counted once in `packets` and `bytes`.
    to_itself = np.concatenate([(flows.src_high == flows.dst_high) & (flows.src_low == flows.dst_low),
                                np.zeros(n, bool)])
    order, starts = _group_starts([version, high, low])
    first = order[starts]

    def total(values):
        return np.add.reduceat(values[order], starts) if len(starts) else np.zeros(0, np.int64)

    tx_packets, tx_bytes = total(sent.astype(np.int64)), total(np.where(sent, length, 0))
    rx_packets, rx_bytes = total((~sent).astype(np.int64)), total(np.where(sent, 0, length))
    own_packets, own_bytes = total(to_itself.astype(np.int64)), total(np.where(to_itself, length, 0))
    return Endpoints(version=version[first], high=high[first], low=low[first],
                     packets=tx_packets + rx_packets - own_packets, bytes=tx_bytes + rx_bytes - own_bytes,
                     tx_packets=tx_packets, tx_bytes=tx_bytes, rx_packets=rx_packets, rx_bytes=rx_bytes,
                     skipped=flows.skipped)
