"""WinDivert's address: where a packet was seen, and the enums that describe a handle."""

from __future__ import annotations

import dataclasses
import enum

from .address_text import format_ipv4, format_ipv6, parse_ipv4, parse_ipv6


class Layer(enum.IntEnum):
    NETWORK = 0
    NETWORK_FORWARD = 1
    FLOW = 2
    SOCKET = 3
    REFLECT = 4


class Event(enum.IntEnum):
    """Values of the `event` field, numbered as WinDivert numbers them."""

    PACKET = 0
    FLOW_ESTABLISHED = 1
    FLOW_DELETED = 2
    SOCKET_BIND = 3
    SOCKET_CONNECT = 4
    SOCKET_LISTEN = 5
    SOCKET_ACCEPT = 6
    SOCKET_CLOSE = 7
    REFLECT_OPEN = 8
    REFLECT_CLOSE = 9


class Flag(enum.IntFlag):
    """Handle flags; the values are WinDivert's own."""

    SNIFF = 0x0001
    DROP = 0x0002
    RECV_ONLY = 0x0004
    SEND_ONLY = 0x0008
    NO_INSTALL = 0x0010
    FRAGMENTS = 0x0020
    # Not in WinDivert: when the reader falls behind, pass packets beyond
    # QUEUE_LENGTH undiverted instead of dropping them (netfilter's queue bypass).
    FAIL_OPEN = 0x1000


class Param(enum.IntEnum):
    QUEUE_LENGTH = 0
    QUEUE_TIME = 1
    QUEUE_SIZE = 2
    VERSION_MAJOR = 3
    VERSION_MINOR = 4


# (default, minimum, maximum) of each settable parameter, as in WinDivert 2.2.
PARAM_LIMITS = {
    Param.QUEUE_LENGTH: (4096, 32, 16384),
    Param.QUEUE_TIME: (2000, 100, 16000),
    Param.QUEUE_SIZE: (4 * 1024 * 1024, 64 * 1024, 32 * 1024 * 1024),
}

PRIORITY_MIN, PRIORITY_MAX = -30000, 30000


@dataclasses.dataclass(slots=True)
class EndpointData:
    """WINDIVERT_DATA_FLOW and WINDIVERT_DATA_SOCKET (the same layout): one endpoint of a flow or socket.

    Addresses are 128-bit numbers, IPv4 as the IPv4-mapped IPv6 address
    ::ffff:a.b.c.d; ports in host order. `process_name` is not WinDivert's: the
    name the kernel gave the process at the event (Linux's eBPF layers; "" where
    unknown), which still names a process that has ended since.
    """

    endpoint_id: int = 0
    parent_endpoint_id: int = 0
    process_id: int = 0
    local_addr: int = 0
    remote_addr: int = 0
    local_port: int = 0
    remote_port: int = 0
    protocol: int = 0
    process_name: str = ""


@dataclasses.dataclass(slots=True)
class ReflectData:
    """WINDIVERT_DATA_REFLECT: the divert handle a REFLECT event is about."""

    timestamp: int = 0          # when the handle was opened (CLOCK_MONOTONIC ns)
    process_id: int = 0
    layer: Layer = Layer.NETWORK
    flags: int = 0
    priority: int = 0


@dataclasses.dataclass(slots=True)
class Address:
    """The WINDIVERT_ADDRESS of a packet or event.

    `timestamp` is in nanoseconds of CLOCK_MONOTONIC (time.monotonic_ns()) on
    every backend, so that timestamps from different handles compare.
    The checksum flags are 1 when that checksum is valid. They default to 0,
    as in WinDivert's zeroed WINDIVERT_ADDRESS, which makes send() fill the
    checksums in: "Injected packets must have the correct checksums or have
    the corresponding *Checksum flag unset".
    `flow` holds the FLOW and SOCKET layers' data (`socket` is the same
    object, as WinDivert's union makes Flow and Socket one), `reflect` the
    REFLECT layer's; both are None at the network layers.
    `direction_known` is not WinDivert's: False for a packet read from a
    capture file that does not say which way it went; its `outbound` is then
    False, as WinDivert's Outbound bit of such a packet would be.
    """

    outbound: bool = False
    loopback: bool = False
    impostor: bool = False
    ipv6: bool = False
    if_idx: int = 0
    sub_if_idx: int = 0
    timestamp: int = 0
    sniffed: bool = False
    layer: Layer = Layer.NETWORK
    event: Event = Event.PACKET
    ip_checksum: bool = False
    tcp_checksum: bool = False
    udp_checksum: bool = False
    flow: EndpointData | None = None
    reflect: ReflectData | None = None
    direction_known: bool = True

    @property
    def inbound(self) -> bool:
        return not self.outbound

    @property
    def socket(self) -> EndpointData | None:
        return self.flow

    @socket.setter
    def socket(self, data: EndpointData | None) -> None:
        self.flow = data

    def copy(self, **changes) -> "Address":
        return dataclasses.replace(self, **changes)


def parse_ipv4_address(text: str) -> int:
    """WinDivertHelperParseIPv4Address: dotted quad to a 32-bit number."""
    value = parse_ipv4(text)
    if value is None:
        raise ValueError(f"not an IPv4 address as WinDivert reads one: {text!r}")
    return value


def parse_ipv6_address(text: str) -> int:
    """WinDivertHelperParseIPv6Address: IPv6 text to a 128-bit number."""
    value = parse_ipv6(text)
    if value is None:
        raise ValueError(f"not an IPv6 address as WinDivert reads one: {text!r}")
    return value


def format_ipv4_address(value: int) -> str:
    """WinDivertHelperFormatIPv4Address."""
    return format_ipv4(value)


def format_ipv6_address(value: int) -> str:
    """WinDivertHelperFormatIPv6Address: an IPv4-mapped address as its dotted quad."""
    return format_ipv6(value)
