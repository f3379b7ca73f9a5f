"""The capture store's record: one fixed-width row per packet, its flag bits
and verdicts, and where its bytes sit in the arenas."""

from __future__ import annotations

import enum

import numpy as np

ARENA_BITS = 20
ARENA_BYTES = 1 << ARENA_BITS


class Verdict(enum.IntEnum):
    PASSED = 0
    MODIFIED = 1
    DROPPED = 2
    HELD = 3
    INJECTED = 4
    SNIFFED = 5


class Flags(enum.IntFlag):
    """Bits of the `flags` column."""

    OUTBOUND = 0x001
    LOOPBACK = 0x002
    IMPOSTOR = 0x004
    IPV6 = 0x008
    SNIFFED = 0x010
    IP_CHECKSUM = 0x020
    TCP_CHECKSUM = 0x040
    UDP_CHECKSUM = 0x080
    FORWARD_LAYER = 0x100
    # A well-formed packet every parser reads alike: no IP options or
    # extension headers, no fragment, exact lengths, a complete TCP, UDP,
    # ICMP or ICMPv6 header. Display filters may decide these rows from the
    # columns alone.
    PLAIN = 0x200
    # Read from a capture file that does not say which way the packet went: OUTBOUND is clear
    # but does not mean inbound.
    DIRECTION_UNKNOWN = 0x400


RECORD = np.dtype([
    ("wall_ns", "<i8"),
    ("timestamp", "<i8"),
    ("offset", "<u8"),
    ("length", "<u4"),
    ("if_idx", "<u4"),
    ("sub_if_idx", "<u4"),
    ("conversation", "<u4"),
    ("src_port", "<u2"),
    ("dst_port", "<u2"),
    ("flags", "<u2"),
    ("ip_version", "u1"),
    ("protocol", "u1"),
    ("verdict", "u1"),
    # Index into the store's ProcessList of the local process the packet's flow belongs to; 0: none.
    ("process", "<u2"),
    # Index into the store's `hosts` of the capture service the packet came from; 0: this window's own.
    ("host", "u1"),
])

FLAG_COLUMNS = {
    "outbound": Flags.OUTBOUND,
    "loopback": Flags.LOOPBACK,
    "impostor": Flags.IMPOSTOR,
    "ipv6": Flags.IPV6,
    "sniffed": Flags.SNIFFED,
    "plain": Flags.PLAIN,
    "direction_unknown": Flags.DIRECTION_UNKNOWN,
}

COLUMNS = tuple(RECORD.names) + tuple(FLAG_COLUMNS)
