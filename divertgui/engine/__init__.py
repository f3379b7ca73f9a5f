"""The divertgui engine: WinDivert's model (filter, divert, sniff, drop,
modify, re-inject) as a Python library. It never imports Qt.

    with Divert("outbound and tcp.DstPort == 80") as handle:
        for packet in handle:
            packet.tcp.dst_port = 8080
            packet.fix_lengths_and_checksums()
            handle.send(packet)
"""

from divertgui.engine.address import (
    Address, Event, Flag, Layer, Param,
    format_ipv4_address, format_ipv6_address, parse_ipv4_address, parse_ipv6_address,
)
from divertgui.engine.checksum import ChecksumFlag, calc_checksums, decrement_ttl
from divertgui.engine.errors import (DivertArgumentError, DivertError, HandleClosedError, HostUnreachableError,
                                     KernelFeatureError, MissingToolError, NotPrivilegedError, PacketCutError,
                                     PacketTooLargeError, UnsupportedPlatformError)
from divertgui.engine.filter import Filter, FilterError, compile_filter, eval_filter, format_filter
from divertgui.engine.handle import Divert
from divertgui.engine.packet import Packet
from divertgui.engine.packet_hash import hash_packet
from divertgui.engine.worker_pool import run_workers

__all__ = [
    "Address", "ChecksumFlag", "Divert", "DivertArgumentError", "DivertError", "Event", "Filter", "FilterError",
    "Flag", "HandleClosedError", "HostUnreachableError", "KernelFeatureError", "Layer", "MissingToolError",
    "NotPrivilegedError", "Packet", "PacketCutError", "PacketTooLargeError", "Param", "UnsupportedPlatformError",
    "calc_checksums", "compile_filter", "decrement_ttl", "eval_filter",
    "format_filter", "format_ipv4_address", "format_ipv6_address", "hash_packet",
    "parse_ipv4_address", "parse_ipv6_address", "run_workers",
]
