"""A diverted packet: its raw bytes and Address, with decoded, writable header views.

Headers are declared as data: each view lists its fields as (offset, size,
bits) descriptors over the packet's bytearray, so reading a field decodes
those bytes and setting one rewrites them. Where the headers are is decided
by headers.parse_headers, exactly as WinDivert decides it; a view is None
when the packet does not have that header (or is too malformed to have it).
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

from divertgui.engine.address import Address
from divertgui.engine.checksum import calc_checksums, decrement_ttl
from divertgui.engine import header_fields as table
from divertgui.engine.header_fields import (
    IPPROTO_AH, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_ICMPV6,
    IPPROTO_ROUTING, IPPROTO_TCP, IPPROTO_UDP, IP_LENGTH, HeaderField, field_value, ip_version, write_value,
)
from divertgui.engine.headers import parse_headers

_MAX_IP_LENGTH = 0xFFFF


class _HeaderField:
    """A descriptor for `size` bytes at `offset` in a header view; `label` is
    the field's name as Wireshark's details pane shows it."""

    __slots__ = ("offset", "size", "name", "label")

    def __init__(self, offset: int, size: int, label: str = ""):
        self.offset = offset
        self.size = size
        self.label = label
        self.name = ""

    def __set_name__(self, owner, name):
        self.name = f"{owner.__name__}.{name}"


class Field(_HeaderField):
    """An unsigned big-endian field: `size` bytes at `offset` in a header, or `bits` of them from `shift`."""

    __slots__ = ("shift", "mask", "boolean")

    def __init__(self, offset: int, size: int, bits: int | None = None, shift: int = 0,
                 boolean: bool = False, label: str = ""):
        super().__init__(offset, size, label)
        self.shift = shift
        self.mask = (1 << (bits if bits is not None else size * 8)) - 1
        self.boolean = boolean

    def __get__(self, view, owner=None):
        if view is None:
            return self
        at = view._offset + self.offset
        value = (int.from_bytes(view._packet._buf[at:at + self.size], "big") >> self.shift) & self.mask
        return bool(value) if self.boolean else value

    def __set__(self, view, value):
        value = _as_int(value, self.name)
        if not 0 <= value <= self.mask:
            raise ValueError(f"{self.name} must be within 0..{self.mask}, not {value}")
        buf = view._packet._buf
        at = view._offset + self.offset
        word = int.from_bytes(buf[at:at + self.size], "big")
        word = (word & ~(self.mask << self.shift)) | (value << self.shift)
        buf[at:at + self.size] = word.to_bytes(self.size, "big")
        view._packet._changed()


def _descriptor(spec: HeaderField) -> "_HeaderField":
    if spec.kind == "address":
        return AddressField(spec.offset, spec.size, label=spec.label)
    return Field(spec.offset, spec.size, bits=spec.mask.bit_length(), shift=spec.shift,
                 boolean=spec.kind == "flag", label=spec.label)


def fields_from(fields: dict):
    """A class decorator: a descriptor for each header field of the table `fields`."""

    def declare(cls):
        for name, spec in fields.items():
            descriptor = _descriptor(spec)
            setattr(cls, name, descriptor)
            descriptor.__set_name__(cls, name)
        return cls

    return declare


class AddressField(_HeaderField):
    """An IPv4 (4 bytes) or IPv6 (16 bytes) address, read as text; set from text, int or ipaddress."""

    __slots__ = ()

    def __get__(self, view, owner=None):
        if view is None:
            return self
        at = view._offset + self.offset
        packed = bytes(view._packet._buf[at:at + self.size])
        if self.size == 4:
            return str(ipaddress.IPv4Address(packed))
        return format_ipv6(packed)

    def __set__(self, view, value):
        kind = ipaddress.IPv4Address if self.size == 4 else ipaddress.IPv6Address
        try:
            packed = kind(value.strip() if isinstance(value, str) else value).packed
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{self.name}: not an {kind.__name__[:4]} address: {value!r}") from exc
        at = view._offset + self.offset
        view._packet._buf[at:at + self.size] = packed
        view._packet._changed()


def _delegated(view_of: str, name: str, what: str) -> property:
    """A Packet property that reads and writes `name` on the header view `view_of` returns;
    None to read when the packet has no such header, an error to write."""

    def get(packet):
        view = getattr(packet, view_of)()
        return getattr(view, name) if view is not None else None

    def put(packet, value):
        setattr(packet._required(getattr(packet, view_of)(), what), name, value)

    return property(get, put)


def field_label(descriptor, name: str) -> str:
    """The field's name as Wireshark shows it, or its attribute name when it has none."""
    return getattr(descriptor, "label", "") or name


def format_ipv6(packed: bytes) -> str:
    """IPv6 text, with an IPv4-mapped address in its dotted form (::ffff:10.0.0.1)."""
    address = ipaddress.IPv6Address(packed)
    if address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


def _as_int(value, name: str) -> int:
    if isinstance(value, bool):
        return int(value)
    try:
        return int(value.__index__())
    except AttributeError:
        raise TypeError(f"{name} takes an integer, not {type(value).__name__}") from None


class HeaderView:
    """A header at a fixed offset of a packet; fields are the descriptors of its class."""

    __slots__ = ("_packet", "_offset")

    def __init__(self, packet: "Packet", offset: int):
        self._packet = packet
        self._offset = offset

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def header_len(self) -> int:
        raise NotImplementedError

    @property
    def raw(self) -> bytes:
        return bytes(self._packet._buf[self._offset:self._offset + self.header_len])

    def field_descriptors(self) -> dict:
        """The fields that fit inside this header, by name, in header order."""
        found = {}
        for klass in reversed(type(self).__mro__):
            for name, attr in vars(klass).items():
                if isinstance(attr, _HeaderField) and attr.offset + attr.size <= self.header_len:
                    found[name] = attr
        return found

    def fields(self) -> dict:
        """Every field's value, by name, for display and tests."""
        return {name: getattr(self, name) for name in self.field_descriptors()}

    def __repr__(self):
        inner = ", ".join(f"{k}={v!r}" for k, v in self.fields().items())
        return f"{type(self).__name__}({inner})"


@fields_from(table.IPV4)
class IPv4Header(HeaderView):
    __slots__ = ()

    @property
    def header_len(self) -> int:
        return self.hdr_len * 4

    @property
    def options(self) -> bytes:
        return bytes(self._packet._buf[self._offset + 20:self._offset + self.header_len])

    @options.setter
    def options(self, value: bytes) -> None:
        value = bytes(value)
        if len(value) % 4 or len(value) > 40:
            raise ValueError(f"IPv4 options must be a multiple of 4 bytes and at most 40, not {len(value)}")
        delta = self._packet._splice(self._offset + 20, self.header_len - 20, value)
        self.hdr_len = 5 + len(value) // 4
        self._packet._grow_ip_length(delta)


@fields_from(table.IPV6)
class IPv6Header(HeaderView):
    __slots__ = ()

    header_len = 40

    @property
    def extension_headers(self) -> list:
        """The extension headers in packet order, as WinDivert walks them."""
        layout = self._packet._parse()
        if layout is None:
            return []
        return [_EXTENSION_VIEWS.get(kind, ExtensionHeader)(self._packet, offset, kind, length)
                for kind, offset, length in layout.ext_headers]

    def _first(self, kind: int):
        for header in self.extension_headers:
            if header.header_type == kind:
                return header
        return None

    @property
    def hop_by_hop(self) -> "OptionsHeader | None":
        return self._first(IPPROTO_HOPOPTS)

    @property
    def routing(self) -> "RoutingHeader | None":
        return self._first(IPPROTO_ROUTING)

    @property
    def fragment(self) -> "FragmentHeader | None":
        return self._first(IPPROTO_FRAGMENT)

    @property
    def dest_options(self) -> "OptionsHeader | None":
        return self._first(IPPROTO_DSTOPTS)


@fields_from(table.IPV6_EXTENSION)
class ExtensionHeader(HeaderView):
    """An IPv6 extension header; `header_type` is the next-header value that announced it."""

    __slots__ = ("header_type", "_length")

    def __init__(self, packet, offset, header_type, length):
        super().__init__(packet, offset)
        self.header_type = header_type
        self._length = length

    @property
    def header_len(self) -> int:
        return self._length

    @property
    def data(self) -> bytes:
        """The bytes after next-header and length."""
        return bytes(self._packet._buf[self._offset + 2:self._offset + self._length])


class IPv6Option(NamedTuple):
    type: int
    offset: int        # from the start of the options (two bytes into the header)
    data: bytes


def ipv6_options(data: bytes) -> list[IPv6Option]:
    """The TLV options of a hop-by-hop or destination-options header; Pad1 is a lone zero byte."""
    options, at = [], 0
    while at < len(data):
        kind = data[at]
        if kind == 0:
            options.append(IPv6Option(0, at, b""))
            at += 1
            continue
        if at + 2 > len(data) or at + 2 + data[at + 1] > len(data):
            options.append(IPv6Option(kind, at, bytes(data[at + 2:])))  # runs past the header
            break
        size = data[at + 1]
        options.append(IPv6Option(kind, at, bytes(data[at + 2:at + 2 + size])))
        at += 2 + size
    return options


class OptionsHeader(ExtensionHeader):
    """Hop-by-hop or destination options."""

    __slots__ = ()

    @property
    def options(self) -> list[IPv6Option]:
        return ipv6_options(self.data)


@fields_from(table.IPV6_ROUTING)
class RoutingHeader(ExtensionHeader):
    __slots__ = ()

    @property
    def type_data(self) -> bytes:
        return bytes(self._packet._buf[self._offset + 4:self._offset + self._length])


@fields_from(table.IPV6_FRAGMENT)
class FragmentHeader(ExtensionHeader):
    __slots__ = ()


@fields_from(table.IPV6_AUTHENTICATION)
class AuthenticationHeader(ExtensionHeader):
    __slots__ = ()


_EXTENSION_VIEWS = {
    IPPROTO_HOPOPTS: OptionsHeader,
    IPPROTO_DSTOPTS: OptionsHeader,
    IPPROTO_ROUTING: RoutingHeader,
    IPPROTO_FRAGMENT: FragmentHeader,
    IPPROTO_AH: AuthenticationHeader,
}


@fields_from(table.ICMP)
class ICMPHeader(HeaderView):
    __slots__ = ()

    header_len = 8


class ICMPv6Header(ICMPHeader):
    __slots__ = ()


@fields_from(table.UDP)
class UDPHeader(HeaderView):
    __slots__ = ()

    header_len = 8


class TCPOption(NamedTuple):
    kind: int
    offset: int        # from the start of the options (20 bytes into the header)
    data: bytes


TCP_OPTION_NAMES = {0: "EOL", 1: "NOP", 2: "MSS", 3: "Window scale", 4: "SACK permitted",
                    5: "SACK", 8: "Timestamps", 28: "User timeout", 29: "TCP-AO", 30: "MPTCP",
                    34: "TCP Fast Open"}


def tcp_options(data: bytes) -> list[TCPOption]:
    """The options of a TCP header; decoding stops at EOL or at an option that runs past the end."""
    options, at = [], 0
    while at < len(data):
        kind = data[at]
        if kind in (0, 1):
            options.append(TCPOption(kind, at, b""))
            at += 1
            if kind == 0:
                break
            continue
        if at + 2 > len(data) or data[at + 1] < 2 or at + data[at + 1] > len(data):
            options.append(TCPOption(kind, at, bytes(data[at + 2:])))  # runs past the header
            break
        size = data[at + 1]
        options.append(TCPOption(kind, at, bytes(data[at + 2:at + size])))
        at += size
    return options


def encode_tcp_options(options) -> bytes:
    """(kind, data) pairs to bytes, padded with EOL to a 4-byte boundary."""
    out = bytearray()
    for kind, *rest in options:
        data = rest[-1] if rest else b""
        if kind in (0, 1):
            out.append(kind)
        else:
            out += bytes((kind, 2 + len(data))) + data
    out += b"\0" * (-len(out) % 4)
    return bytes(out)


@fields_from(table.TCP)
class TCPHeader(HeaderView):
    __slots__ = ("_length",)

    def __init__(self, packet, offset, length):
        super().__init__(packet, offset)
        self._length = length

    @property
    def header_len(self) -> int:
        """The header's bytes present: HdrLength*4, or fewer when the packet ends first."""
        return self._length

    @property
    def options(self) -> bytes:
        return bytes(self._packet._buf[self._offset + 20:self._offset + self._length])

    @options.setter
    def options(self, value: bytes) -> None:
        value = bytes(value)
        if len(value) % 4 or len(value) > 40:
            raise ValueError(f"TCP options must be a multiple of 4 bytes and at most 40, not {len(value)}")
        delta = self._packet._splice(self._offset + 20, self._length - 20, value)
        self._length = 20 + len(value)
        self.hdr_len = self._length // 4
        self._packet._grow_ip_length(delta)

    @property
    def option_list(self) -> list[TCPOption]:
        return tcp_options(self.options)

    def _option(self, kind: int) -> bytes | None:
        for option in self.option_list:
            if option.kind == kind:
                return option.data
        return None

    def _set_option(self, kind: int, data: bytes | None) -> None:
        """Rewrite the option in place when it keeps its size; otherwise rebuild the options."""
        current = self.option_list
        for option in current:
            if option.kind == kind and data is not None and len(option.data) == len(data):
                at = self._offset + 20 + option.offset + 2
                self._packet._buf[at:at + len(data)] = data
                self._packet._changed()
                return
        kept = [(o.kind, o.data) for o in current if o.kind not in (kind, 0)]
        if data is not None:
            kept.append((kind, data))
        self.options = encode_tcp_options(kept)

    @property
    def mss(self) -> int | None:
        data = self._option(2)
        return int.from_bytes(data, "big") if data is not None and len(data) == 2 else None

    @mss.setter
    def mss(self, value: int | None) -> None:
        self._set_option(2, None if value is None else _as_int(value, "mss").to_bytes(2, "big"))

    @property
    def window_scale(self) -> int | None:
        data = self._option(3)
        return data[0] if data is not None and len(data) == 1 else None

    @window_scale.setter
    def window_scale(self, value: int | None) -> None:
        self._set_option(3, None if value is None else bytes((_as_int(value, "window_scale"),)))

    @property
    def sack_permitted(self) -> bool:
        return self._option(4) is not None

    @sack_permitted.setter
    def sack_permitted(self, value: bool) -> None:
        if bool(value) != self.sack_permitted:
            self._set_option(4, b"" if value else None)

    @property
    def sack(self) -> list[tuple[int, int]] | None:
        """The SACK blocks as (left edge, right edge) pairs."""
        data = self._option(5)
        if data is None:
            return None
        return [(int.from_bytes(data[i:i + 4], "big"), int.from_bytes(data[i + 4:i + 8], "big"))
                for i in range(0, len(data) - 7, 8)]

    @sack.setter
    def sack(self, blocks) -> None:
        if blocks is None:
            self._set_option(5, None)
            return
        data = b"".join(left.to_bytes(4, "big") + right.to_bytes(4, "big") for left, right in blocks)
        self._set_option(5, data)

    @property
    def timestamps(self) -> tuple[int, int] | None:
        """(TSval, TSecr)."""
        data = self._option(8)
        if data is None or len(data) != 8:
            return None
        return int.from_bytes(data[:4], "big"), int.from_bytes(data[4:], "big")

    @timestamps.setter
    def timestamps(self, value) -> None:
        if value is None:
            self._set_option(8, None)
            return
        tsval, tsecr = value
        self._set_option(8, tsval.to_bytes(4, "big") + tsecr.to_bytes(4, "big"))


class Packet:
    """Raw IPv4/IPv6 bytes (from the IP header on, as WinDivert gives them) and their Address.

    A bytearray passed in is used as it is, so edits show in it; anything
    else is copied. Construction never fails on malformed bytes: the views
    of headers that cannot be decoded are None. `ticket` identifies the
    packet's pending verdict to the handle that received it (0: none).
    """

    __slots__ = ("_buf", "address", "ticket", "_layout", "_parsed")

    def __init__(self, raw, address: Address | None = None, ticket: int = 0):
        self._buf = raw if isinstance(raw, bytearray) else bytearray(raw)
        if address is None:
            address = Address(ipv6=ip_version(self._buf) == 6)
        self.address = address
        self.ticket = ticket
        self._layout = None
        self._parsed = False

    # parsing

    def _parse(self):
        if not self._parsed:
            self._layout = parse_headers(self._buf)
            self._parsed = True
        return self._layout

    def _changed(self) -> None:
        self._parsed = False

    def _splice(self, start: int, old_len: int, new: bytes) -> int:
        self._buf[start:start + old_len] = new
        self._changed()
        return len(new) - old_len

    def _grow_ip_length(self, delta: int) -> None:
        """Keep the IP length field in step with bytes added or removed inside the packet."""
        if not delta:
            return
        field = IP_LENGTH[4 if ip_version(self._buf) == 4 else 6][0]
        length = field_value(self._buf, 0, field) + delta
        write_value(self._buf, 0, field, max(0, min(length, _MAX_IP_LENGTH)))
        self._changed()

    # raw bytes

    @property
    def raw(self) -> bytes:
        """A copy of the packet's bytes."""
        return bytes(self._buf)

    @raw.setter
    def raw(self, value) -> None:
        self._buf[:] = value
        self._changed()

    @property
    def buffer(self) -> bytearray:
        """The packet's own bytes, not a copy: edits to it are edits to the packet (pydivert's
        `Packet.raw` is a memoryview of it). Where the headers lie is read once, so an edit
        in place to a header length or next-header field shows in the views after `raw` is assigned."""
        return self._buf

    def __bytes__(self) -> bytes:
        return bytes(self._buf)

    def __len__(self) -> int:
        return len(self._buf)

    # header views

    @property
    def ip(self) -> IPv4Header | None:
        layout = self._parse()
        return IPv4Header(self, 0) if layout is not None and layout.version == 4 else None

    @property
    def ipv4(self) -> IPv4Header | None:
        return self.ip

    @property
    def ipv6(self) -> IPv6Header | None:
        layout = self._parse()
        return IPv6Header(self, 0) if layout is not None and layout.version == 6 else None

    @property
    def icmp(self) -> ICMPHeader | None:
        layout = self._parse()
        if layout is None or layout.transport != IPPROTO_ICMP:
            return None
        return ICMPHeader(self, layout.transport_offset)

    @property
    def icmpv4(self) -> ICMPHeader | None:
        return self.icmp

    @property
    def icmpv6(self) -> ICMPv6Header | None:
        layout = self._parse()
        if layout is None or layout.transport != IPPROTO_ICMPV6:
            return None
        return ICMPv6Header(self, layout.transport_offset)

    @property
    def tcp(self) -> TCPHeader | None:
        layout = self._parse()
        if layout is None or layout.transport != IPPROTO_TCP:
            return None
        return TCPHeader(self, layout.transport_offset, layout.transport_len)

    @property
    def udp(self) -> UDPHeader | None:
        layout = self._parse()
        if layout is None or layout.transport != IPPROTO_UDP:
            return None
        return UDPHeader(self, layout.transport_offset)

    @property
    def payload(self) -> bytes | None:
        """The bytes after the transport header (or after the IP headers when there is none)."""
        layout = self._parse()
        if layout is None:
            return None
        return bytes(self._buf[layout.payload_offset:layout.payload_offset + layout.payload_len])

    @payload.setter
    def payload(self, value: bytes) -> None:
        """Replace the payload; a new size moves the IP length (and UDP length) with it."""
        layout = self._parse()
        if layout is None:
            raise ValueError("the packet is not a parsable IPv4/IPv6 packet: it has no payload to set")
        value = bytes(value)
        delta = len(value) - layout.payload_len
        if delta and len(self._buf) + delta - IP_LENGTH[layout.version][1] > _MAX_IP_LENGTH:
            raise ValueError(f"a payload of {len(value)} bytes makes the packet longer than IP allows")
        udp_at = layout.transport_offset if layout.transport == IPPROTO_UDP else -1
        self._splice(layout.payload_offset, layout.payload_len, value)
        self._grow_ip_length(delta)
        if udp_at >= 0 and delta:
            length = field_value(self._buf, udp_at, table.UDP["length"]) + delta
            write_value(self._buf, udp_at, table.UDP["length"], max(0, min(length, 0xFFFF)))

    # pydivert-style conveniences

    def _ip_view(self):
        layout = self._parse()
        if layout is None:
            return None
        return IPv4Header(self, 0) if layout.version == 4 else IPv6Header(self, 0)

    def _port_view(self):
        layout = self._parse()
        if layout is None:
            return None
        if layout.transport == IPPROTO_TCP:
            return TCPHeader(self, layout.transport_offset, layout.transport_len)
        if layout.transport == IPPROTO_UDP:
            return UDPHeader(self, layout.transport_offset)
        return None

    src_addr = _delegated("_ip_view", "src_addr", "no IP header")
    dst_addr = _delegated("_ip_view", "dst_addr", "no IP header")
    src_port = _delegated("_port_view", "src_port", "no TCP or UDP header")
    dst_port = _delegated("_port_view", "dst_port", "no TCP or UDP header")

    def _required(self, view, what: str):
        if view is None:
            raise ValueError(f"the packet has {what} to change (first bytes: {bytes(self._buf[:8]).hex()})")
        return view

    @property
    def protocol(self) -> int | None:
        """The transport protocol number, after any IPv6 extension headers."""
        layout = self._parse()
        return layout.protocol if layout is not None else None

    @property
    def is_outbound(self) -> bool:
        return bool(self.address.outbound)

    @property
    def is_inbound(self) -> bool:
        return not self.address.outbound

    @property
    def is_loopback(self) -> bool:
        return bool(self.address.loopback)

    @property
    def direction(self) -> str:
        return "outbound" if self.address.outbound else "inbound"

    # after an edit

    def fix_lengths(self) -> None:
        """Set the IP length (and the UDP length) from the bytes present."""
        layout = self._parse()
        if layout is None:
            raise ValueError("the packet is not a parsable IPv4/IPv6 packet: its lengths cannot be fixed")
        size = len(self._buf)
        field, counted_from = IP_LENGTH[layout.version]
        write_value(self._buf, 0, field, min(size - counted_from, _MAX_IP_LENGTH))
        self._changed()
        layout = self._parse()
        if layout is not None and layout.transport == IPPROTO_UDP:
            at = layout.transport_offset
            write_value(self._buf, at, table.UDP["length"], min(size - at, 0xFFFF))

    def recalculate_checksums(self, flags: int = 0) -> bool:
        """calc_checksums on this packet; the address's checksum bits follow."""
        return calc_checksums(self._buf, self.address, flags)

    def fix_lengths_and_checksums(self, flags: int = 0) -> bool:
        self.fix_lengths()
        return self.recalculate_checksums(flags)

    def decrement_ttl(self) -> bool:
        return decrement_ttl(self._buf)

    def __repr__(self):
        layout = self._parse()
        if layout is None:
            return f"Packet({len(self._buf)} bytes, not IPv4/IPv6, {self.direction})"
        ports = ""
        if self.src_port is not None:
            ports = f" {self.src_port} -> {self.dst_port}"
        return (f"Packet({self.direction} proto={layout.protocol} "
                f"{self.src_addr} -> {self.dst_addr}{ports}, {len(self._buf)} bytes)")
