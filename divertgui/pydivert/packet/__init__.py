"""pydivert's Packet over the engine's: the same bytes and Address, pydivert's names and types.

`Packet.raw` is a memoryview of the engine packet's own bytearray, so edits
through either show in both; the header views wrap the engine's views. As
in pydivert, header views are kept until `raw` is replaced or the packet
changes size, and setting a header field clears the address's checksum
flags (the engine's send() then fills those checksums in, as WinDivert's does).
"""

from __future__ import annotations

import socket

from divertgui.engine.address import Address, EndpointData, Layer, ReflectData
from divertgui.engine.checksum import calc_checksums
from divertgui.engine.header_fields import IPV4, IPV4_HEADER_LEN
from divertgui.engine.filter import FilterError, compile_filter
from divertgui.engine.packet import Packet as EnginePacket
from divertgui.pydivert.address import endpoint_data, engine_address, event_value, reflect_data, windivert_address
from divertgui.pydivert.consts import CalcChecksumsOption, Direction, Protocol
from divertgui.pydivert.packet.icmp import ICMPHeader, ICMPv4Header, ICMPv6Header
from divertgui.pydivert.packet.ip import IPHeader, IPv4Header, IPv6Header
from divertgui.pydivert.packet.tcp import TCPHeader
from divertgui.pydivert.packet.udp import UDPHeader

__all__ = ["Packet"]

_VERSION_SHIFT = IPV4["version"].shift

_NO_TRANSPORT_CHECKSUMS = (CalcChecksumsOption.NO_TCP_CHECKSUM | CalcChecksumsOption.NO_UDP_CHECKSUM
                           | CalcChecksumsOption.NO_IP_CHECKSUM)


def _endpoint(data) -> EndpointData | None:
    """FLOW/SOCKET data as the engine holds it, from the engine's form or WinDivert's structure."""
    return data if data is None or isinstance(data, EndpointData) else endpoint_data(data)


def _reflect(data) -> ReflectData | None:
    return data if data is None or isinstance(data, ReflectData) else reflect_data(data)


def _header(name: str, wrapper) -> property:
    """The engine's `name` header view as pydivert's `wrapper`; None when the packet has none."""
    return property(lambda packet: packet._view(name, wrapper))


def _layer_data(layer: Layer, member: str, attribute: str, convert) -> property:
    """The address's `attribute` as WINDIVERT_ADDRESS's union `member` at `layer`."""

    def get(packet):
        return getattr(packet.wd_addr, member) if packet.layer == layer else None

    def put(packet, data) -> None:
        setattr(packet._packet.address, attribute, convert(data))

    return property(get, put)


def _through(header_of, name: str) -> property:
    """The field `name` of the header `header_of(packet)` finds: None without that header,
    whose absence also makes setting the field do nothing, as in pydivert."""

    def get(packet):
        header = header_of(packet)
        return getattr(header, name) if header else None

    def put(packet, value) -> None:
        header = header_of(packet)
        if header:
            setattr(header, name, value)

    return property(get, put)


class Packet:
    """A packet as pydivert 4 shows it: raw bytes, header views and WinDivert address fields."""

    __slots__ = ("_packet", "_views")

    def __init__(self, raw, interface: int | tuple[int, int] | None = None,
                 direction: Direction = Direction.OUTBOUND, timestamp: int = 0, loopback: bool = False,
                 impostor: bool = False, sniffed: bool = False, ip_checksum: bool = False,
                 tcp_checksum: bool = False, udp_checksum: bool = False, layer: Layer = Layer.NETWORK,
                 event: int = 0, flow=None, socket=None, reflect=None, wd_addr=None) -> None:
        buffer = raw if isinstance(raw, bytearray) else bytearray(raw)
        if wd_addr is not None:
            address = engine_address(wd_addr)
        else:
            if_idx, sub_if_idx = interface if isinstance(interface, tuple) else (interface or 0, 0)
            address = Address(
                outbound=direction == Direction.OUTBOUND, loopback=loopback, impostor=impostor,
                ipv6=bool(buffer) and buffer[0] >> _VERSION_SHIFT == 6, if_idx=if_idx, sub_if_idx=sub_if_idx,
                timestamp=timestamp, sniffed=sniffed, layer=Layer(layer),
                event=event_value(event),
                ip_checksum=ip_checksum, tcp_checksum=tcp_checksum, udp_checksum=udp_checksum,
                flow=_endpoint(flow if flow is not None else socket), reflect=_reflect(reflect))
        self._packet = EnginePacket(buffer, address)
        self._views: dict = {}

    @classmethod
    def _of(cls, packet: EnginePacket) -> "Packet":
        """The pydivert face of a packet the engine received (its pending verdict goes with it)."""
        self = cls.__new__(cls)
        self._packet = packet
        self._views = {}
        return self

    def __repr__(self) -> str:
        proto = self.protocol[0]
        try:
            name = Protocol(proto).name if proto is not None else "Unknown"
        except ValueError:
            name = str(proto)
        return (f"<Packet {name} from={self.src_addr}:{self.src_port} "
                f"to={self.dst_addr}:{self.dst_port} len={len(self._packet)}>")

    # -- bytes -------------------------------------------------------------------

    @property
    def raw(self) -> memoryview:
        return memoryview(self._packet.buffer)

    @raw.setter
    def raw(self, value) -> None:
        self._packet.raw = bytes(value)
        self._views.clear()
        self._invalidate_checksums()

    def _resize(self, start: int, end: int, value: bytes) -> None:
        """Replace bytes start..end with `value` and set the IP length to the new size."""
        buffer = self._packet.buffer
        self.raw = bytes(buffer[:start]) + value + bytes(buffer[end:])
        ip = self.ip
        if ip is not None:
            ip.packet_len = len(buffer)

    # -- headers -----------------------------------------------------------------

    def _view(self, name: str, wrapper):
        # The engine's views are kept, not the wrappers: a wrapper refers to
        # this packet, and a cycle would keep an unsent packet (and its
        # pending verdict) alive until the garbage collector runs.
        views = self._views
        if name not in views:
            views[name] = getattr(self._packet, name)
        engine_view = views[name]
        return wrapper(self, engine_view) if engine_view is not None else None

    @property
    def address_family(self) -> int | None:
        if len(self._packet) >= IPV4_HEADER_LEN:
            version = self._packet.buffer[0] >> _VERSION_SHIFT
            if version == 4:
                return socket.AF_INET
            if version == 6:
                return socket.AF_INET6
        return None

    ipv4 = _header("ipv4", IPv4Header)
    ipv6 = _header("ipv6", IPv6Header)

    @property
    def ip(self) -> IPHeader | None:
        """The IPv4 or the IPv6 header."""
        return self.ipv4 or self.ipv6

    tcp = _header("tcp", TCPHeader)
    udp = _header("udp", UDPHeader)
    icmpv4 = _header("icmpv4", ICMPv4Header)
    icmpv6 = _header("icmpv6", ICMPv6Header)

    @property
    def icmp(self) -> ICMPHeader | None:
        """The ICMP or the ICMPv6 header."""
        return self.icmpv4 or self.icmpv6

    @property
    def protocol(self) -> tuple[int | None, int | None]:
        """(protocol number after the IPv6 extension headers, offset of the header it names)."""
        if self.ipv4 is not None:
            return self.ipv4.protocol, self.ipv4.header_len
        ipv6 = self.ipv6
        if ipv6 is None:
            return None, None
        extensions = ipv6._view.extension_headers
        end = extensions[-1].offset + extensions[-1].header_len if extensions else ipv6.header_len
        return self._packet.protocol, end

    def _transport(self):
        return self.tcp or self.udp or self.icmpv4 or self.icmpv6

    # -- addresses, ports, payload: None when absent, setting them then does nothing -------

    def _ports(self) -> TCPHeader | UDPHeader | None:
        return self.tcp or self.udp

    src_addr = _through(lambda packet: packet.ip, "src_addr")
    dst_addr = _through(lambda packet: packet.ip, "dst_addr")
    src_port = _through(_ports, "src_port")
    dst_port = _through(_ports, "dst_port")

    @property
    def payload(self) -> bytes | None:
        """The bytes after the TCP, UDP or ICMP header; None without one."""
        transport = self._transport()
        return transport.payload if transport else None

    @payload.setter
    def payload(self, value) -> None:
        transport = self._transport()
        if transport:
            transport.payload = value
            self._views.clear()

    # -- the address ---------------------------------------------------------------

    @property
    def address(self) -> Address:
        """The engine's Address of this packet."""
        return self._packet.address

    @property
    def wd_addr(self):
        """A copy of the address as WinDivert's WINDIVERT_ADDRESS (set fields through the Packet)."""
        return windivert_address(self._packet.address)

    @property
    def interface(self) -> tuple[int, int]:
        address = self._packet.address
        return address.if_idx, address.sub_if_idx

    @interface.setter
    def interface(self, value: int | tuple[int, int]) -> None:
        address = self._packet.address
        address.if_idx, address.sub_if_idx = value if isinstance(value, tuple) else (value, 0)

    @property
    def direction(self) -> Direction:
        return Direction.OUTBOUND if self._packet.address.outbound else Direction.INBOUND

    @direction.setter
    def direction(self, value: Direction) -> None:
        self._packet.address.outbound = value == Direction.OUTBOUND

    @property
    def is_outbound(self) -> bool:
        return bool(self._packet.address.outbound)

    @is_outbound.setter
    def is_outbound(self, value: bool) -> None:
        self._packet.address.outbound = bool(value)

    @property
    def is_inbound(self) -> bool:
        return not self._packet.address.outbound

    @is_inbound.setter
    def is_inbound(self, value: bool) -> None:
        self._packet.address.outbound = not value

    def _address_field(name: str, convert):
        """The address's field `name`, read and written as `convert` makes it."""

        def get(self):
            return convert(getattr(self._packet.address, name))

        def put(self, value) -> None:
            setattr(self._packet.address, name, convert(value))

        return property(get, put)

    # CLOCK_MONOTONIC nanoseconds (WinDivert: QueryPerformanceCounter ticks).
    timestamp = _address_field("timestamp", int)
    is_loopback = loopback = _address_field("loopback", bool)
    is_impostor = impostor = _address_field("impostor", bool)
    is_sniffed = sniffed = _address_field("sniffed", bool)
    # WinDivert's meaning: the checksum is known to be valid (received), or is
    # to be sent as it is rather than filled in (sent).
    ip_checksum = _address_field("ip_checksum", bool)
    tcp_checksum = _address_field("tcp_checksum", bool)
    udp_checksum = _address_field("udp_checksum", bool)
    layer = _address_field("layer", Layer)
    event = _address_field("event", event_value)
    del _address_field

    # FLOW, SOCKET and REFLECT data: read as WinDivert's structures (copies, None
    # at the other layers), set from those or from the engine's EndpointData/ReflectData.
    flow = _layer_data(Layer.FLOW, "Flow", "flow", _endpoint)
    socket = _layer_data(Layer.SOCKET, "Socket", "flow", _endpoint)
    reflect = _layer_data(Layer.REFLECT, "Reflect", "reflect", _reflect)

    # -- checksums and filters -------------------------------------------------------

    def _invalidate_checksums(self) -> None:
        address = self._packet.address
        address.ip_checksum = address.tcp_checksum = address.udp_checksum = False

    def _checksums_hold(self, flags: int = 0) -> bool:
        """Whether recomputing the checksums `flags` leaves on would change no byte."""
        original = self._packet.buffer
        recomputed = bytearray(original)
        calc_checksums(recomputed, None, flags)
        return recomputed == original

    @property
    def is_checksum_valid(self) -> bool:
        """True when every checksum the packet has (IPv4, TCP, UDP, ICMP, ICMPv6) is correct."""
        return self._checksums_hold()

    @property
    def icmp_checksum(self) -> bool:
        """True when the ICMP or ICMPv6 checksum is correct (WinDivert's address has no flag for it)."""
        return self._checksums_hold(_NO_TRANSPORT_CHECKSUMS)

    def recalculate_checksums(self, flags: int = 0) -> int:
        """WinDivertHelperCalcChecksums: 1 when done, 0 when the packet does not allow it."""
        return int(self._packet.recalculate_checksums(int(flags)))

    def matches(self, filter_str: str) -> bool:
        """WinDivertHelperEvalFilter: whether the packet and its address match the filter."""
        try:
            compiled = compile_filter(filter_str, self._packet.address.layer)
        except FilterError as exc:
            # pydivert's wording on Linux (EINVAL), with the compiler's reason.
            raise ValueError(f"Cannot evaluate filter {filter_str!r}: Invalid argument "
                             f"({exc.message} at position {exc.position})") from exc
        return bool(compiled.match(bytes(self._packet.buffer), self._packet.address))
