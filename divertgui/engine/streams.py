"""Follow a TCP or UDP stream: the conversation a packet belongs to, both
directions, and its data in order.

Ports reused for a new TCP connection (a new SYN) start a new stream.
TCP data is put in sequence order per direction: bytes seen before
(retransmissions, overlaps) are kept once, as first captured in sequence
order, and bytes never captured become a gap segment. The two directions are
interleaved in the order their data became complete in the capture. UDP
datagrams keep their arrival order.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from divertgui.engine.conversations import TCP, UDP, conversation_filter, excluding_filter, protocol_name
from divertgui.engine.errors import StreamError
from divertgui.engine.header_fields import IPV4, IPV6, field_value
from divertgui.engine.header_fields import TCP as TCP_FIELDS
from divertgui.engine.headers import parse_headers

if TYPE_CHECKING:
    from divertgui.engine.store import CaptureStore

_FIN, _SYN, _RST, _ACK = 0x01, 0x02, 0x04, 0x10
_SEQ_SPACE = 1 << 32


class Direction(enum.IntEnum):
    CLIENT_TO_SERVER = 0
    SERVER_TO_CLIENT = 1


class StreamSegment(NamedTuple):
    """Data of one direction; `missing` > 0 marks that many bytes never captured (then `data` is empty)."""

    direction: Direction
    row: int
    data: bytes
    missing: int = 0


class _Flow(NamedTuple):
    version: int
    protocol: int
    src: bytes
    sport: int
    dst: bytes
    dport: int


class _Packet(NamedTuple):
    row: int
    flow: _Flow
    seq: int
    flags: int
    payload: bytes


def _parse(raw: bytes, row: int) -> _Packet | None:
    layout = parse_headers(raw)
    if layout is None or layout.transport not in (TCP, UDP):
        return None
    ip = IPV4 if layout.version == 4 else IPV6
    at = layout.transport_offset
    # TCP's and UDP's ports lie alike.
    flow = _Flow(layout.version, layout.transport, bytes(raw[ip["src_addr"].span]),
                 field_value(raw, at, TCP_FIELDS["src_port"]), bytes(raw[ip["dst_addr"].span]),
                 field_value(raw, at, TCP_FIELDS["dst_port"]))
    seq = field_value(raw, at, TCP_FIELDS["seq_num"]) if layout.transport == TCP else 0
    flags = field_value(raw, at, TCP_FIELDS["flags"]) if layout.transport == TCP else 0
    payload = raw[layout.payload_offset:layout.payload_offset + layout.payload_len]
    return _Packet(row, flow, seq, flags, bytes(payload))


def _reverse(flow: _Flow) -> _Flow:
    return flow._replace(src=flow.dst, sport=flow.dport, dst=flow.src, dport=flow.sport)


def _text(address: bytes) -> str:
    return str(ipaddress.ip_address(address))


@dataclasses.dataclass
class Stream:
    """A followed conversation: its two sides, every row of it, and its data."""

    version: int
    protocol: int
    client: tuple[str, int]
    server: tuple[str, int]
    rows: np.ndarray
    segments: list[StreamSegment]
    duplicate_bytes: int = 0        # TCP bytes captured more than once (retransmissions, overlaps)
    # When the same addresses and ports carried several TCP connections, the
    # first and last timestamps of the followed one: its filters add them.
    time_bounds: tuple[int, int] | None = None

    @property
    def protocol_name(self) -> str:
        return protocol_name(self.protocol)

    def _parts(self):
        return (self.version, self.protocol, self.client[0], self.client[1], self.server[0], self.server[1])

    def filter_text(self, direction: Direction | None = None) -> str:
        """The display filter that selects this conversation (or one of its directions) exactly."""
        side = {None: None, Direction.CLIENT_TO_SERVER: "a_to_b", Direction.SERVER_TO_CLIENT: "b_to_a"}[direction]
        text = conversation_filter(*self._parts(), direction=side)
        if self.time_bounds is None:
            return text
        first, last = self.time_bounds
        return f"({text}) and timestamp >= {first} and timestamp <= {last}"

    def excluding_filter_text(self) -> str:
        """The display filter that shows everything but this conversation."""
        text = excluding_filter(*self._parts())
        if self.time_bounds is None:
            return text
        first, last = self.time_bounds
        return f"{text} or timestamp < {first} or timestamp > {last}"

    def data(self, direction: Direction) -> bytes:
        return b"".join(s.data for s in self.segments if s.direction == direction)

    def missing(self, direction: Direction) -> int:
        return sum(s.missing for s in self.segments if s.direction == direction)

    def describe(self, direction: Direction | None = None) -> str:
        """"TCP 10.0.0.1:5000 → 10.0.0.2:80" for a direction; "↔" for both."""
        client, server = (self._endpoint_text(*side) for side in (self.client, self.server))
        if direction is Direction.SERVER_TO_CLIENT:
            return f"{self.protocol_name} {server} → {client}"
        arrow = "→" if direction is Direction.CLIENT_TO_SERVER else "↔"
        return f"{self.protocol_name} {client} {arrow} {server}"

    def _endpoint_text(self, address: str, port: int) -> str:
        return f"[{address}]:{port}" if self.version == 6 else f"{address}:{port}"


def _conversation_packets(store: CaptureStore, row: int) -> tuple[_Flow, list[_Packet]]:
    """The flow of `row` as it was sent, and every packet of its conversation in arrival order."""
    if not 0 <= row < len(store):
        raise StreamError(f"packet {row + 1} is not in the capture (it has {len(store)} packets)")
    selected = _parse(store.raw(row), row)
    if selected is None:
        raise StreamError(f"packet {row + 1} is not a TCP or UDP packet: there is no stream to follow")
    flow, back = selected.flow, _reverse(selected.flow)
    # The conversation column narrows the search; the headers decide (ids may collide).
    candidates = np.flatnonzero(store.column("conversation") == store.value("conversation", row))
    packets = []
    for candidate in candidates.tolist():
        packet = _parse(store.raw(candidate), candidate) if candidate != row else selected
        if packet is not None and packet.flow in (flow, back):
            packets.append(packet)
    return flow, packets


def follow_stream(store: CaptureStore, row: int) -> Stream:
    """The stream of the TCP or UDP packet at `row`; StreamError when there is none."""
    flow, packets = _conversation_packets(store, row)
    time_bounds = None
    if flow.protocol == TCP:
        connections = _connections(packets)
        if len(connections) > 1:
            packets = next(c for c in connections if any(p.row == row for p in c))
            stamps = [store.value("timestamp", p.row) for p in packets]
            time_bounds = (min(stamps), max(stamps))
    client = _client_flow(flow, packets)
    directions = [Direction.CLIENT_TO_SERVER if p.flow == client else Direction.SERVER_TO_CLIENT for p in packets]
    if flow.protocol == UDP:
        segments = [StreamSegment(d, p.row, p.payload) for d, p in zip(directions, packets) if p.payload]
        duplicates = 0
    else:
        ordered = {d: _tcp_direction([p for p, pd in zip(packets, directions) if pd == d], d)
                   for d in Direction}
        segments = _interleave(ordered[Direction.CLIENT_TO_SERVER][0], ordered[Direction.SERVER_TO_CLIENT][0])
        duplicates = ordered[Direction.CLIENT_TO_SERVER][1] + ordered[Direction.SERVER_TO_CLIENT][1]
    return Stream(
        version=flow.version, protocol=flow.protocol,
        client=(_text(client.src), client.sport), server=(_text(client.dst), client.dport),
        rows=np.array([p.row for p in packets], np.int64), segments=segments, duplicate_bytes=duplicates,
        time_bounds=time_bounds)


def _connections(packets: list[_Packet]) -> list[list[_Packet]]:
    """TCP packets of one address and port pair, split where a new connection opens:
    a SYN without ACK after the current connection's own, different SYN, or after its FIN or RST."""
    connections: list[list[_Packet]] = [[]]
    opening, closed = None, False
    for packet in packets:
        if packet.flags & (_SYN | _ACK) == _SYN:
            if connections[-1] and (closed or (opening is not None and packet.seq != opening)):
                connections.append([])
                closed = False
            opening = packet.seq
        closed = closed or bool(packet.flags & (_FIN | _RST))
        connections[-1].append(packet)
    return connections


def _client_flow(flow: _Flow, packets: list[_Packet]) -> _Flow:
    """The client opened the connection (sent the SYN without ACK), else sent the first packet."""
    for packet in packets:
        if packet.flow.protocol == TCP and packet.flags & (_SYN | _ACK) == _SYN:
            return packet.flow
    return packets[0].flow if packets else flow


def _signed(value: int) -> int:
    value %= _SEQ_SPACE
    return value - _SEQ_SPACE if value >= _SEQ_SPACE // 2 else value


def _tcp_direction(packets: list[_Packet], direction: Direction) -> tuple[list[tuple[int, StreamSegment]], int]:
    """(ready row, segment) in sequence order for one direction, and the bytes seen twice.

    A segment's ready row is the last row needed to have every byte up to its
    end: when out-of-order data arrives first, it is ready with the row that fills the hole.
    """
    syns = [p for p in packets if p.flags & _SYN]
    data = [(p.seq + 1 if p.flags & _SYN else p.seq, p) for p in packets if p.payload]
    if not data:
        return [], 0
    base = (syns[0].seq + 1) if syns else data[0][0]
    pieces = sorted(((_signed(seq - base), p.row, p.payload) for seq, p in data), key=lambda x: (x[0], x[1]))
    expected = 0 if syns else pieces[0][0]
    ready = -1
    out, duplicates = [], 0
    for start, row, payload in pieces:
        end = start + len(payload)
        if end <= expected:
            duplicates += len(payload)
            continue
        ready = max(ready, row)
        if start > expected:
            out.append((ready, StreamSegment(direction, row, b"", start - expected)))
        elif start < expected:
            duplicates += expected - start
            payload = payload[expected - start:]
        out.append((ready, StreamSegment(direction, row, payload)))
        expected = end
    return out, duplicates


def _interleave(first: list[tuple[int, StreamSegment]], second: list[tuple[int, StreamSegment]]) -> list[StreamSegment]:
    """Both directions merged by ready row, each keeping its own order."""
    merged, i, j = [], 0, 0
    while i < len(first) or j < len(second):
        if j >= len(second) or (i < len(first) and first[i][0] <= second[j][0]):
            merged.append(first[i][1])
            i += 1
        else:
            merged.append(second[j][1])
            j += 1
    return merged
