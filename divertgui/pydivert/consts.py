"""pydivert's constants, with WinDivert's values (the engine's enums where they are the same)."""

from __future__ import annotations

import enum

from divertgui.engine import header_fields as headers
from divertgui.engine.address import Flag as _EngineFlag
from divertgui.engine.address import Layer
from divertgui.engine.address import Param as _EngineParam
from divertgui.engine.checksum import ChecksumFlag

__all__ = ["Layer", "Flag", "RecvFlag", "Param", "Direction", "CalcChecksumsOption", "Protocol",
           "IPV6_EXT_HEADERS", "DEFAULT_PACKET_BUFFER_SIZE"]

# WINDIVERT_MTU_MAX (40 + 0xFFFF): the largest packet WinDivert returns.
DEFAULT_PACKET_BUFFER_SIZE = 65575

# pydivert's Flag is WinDivert's (the engine's) with a name for no flags.
Flag = enum.IntFlag("Flag", [("DEFAULT", 0)] + [(flag.name, flag.value) for flag in _EngineFlag],
                    module=__name__)
Flag.__doc__ = "WinDivertOpen's flags; FAIL_OPEN is divertgui's own (see docs/porting.md)."


class RecvFlag(enum.IntEnum):
    """WinDivertRecvEx's flags (reserved in WinDivert 2.2)."""

    DEFAULT = 0
    NO_BLOCK = 1


class Param(enum.IntEnum):
    """WinDivertSetParam/GetParam's parameters, as pydivert names them."""

    QUEUE_LEN = _EngineParam.QUEUE_LENGTH.value
    QUEUE_TIME = _EngineParam.QUEUE_TIME.value
    QUEUE_SIZE = _EngineParam.QUEUE_SIZE.value
    VERSION_MAJOR = _EngineParam.VERSION_MAJOR.value
    VERSION_MINOR = _EngineParam.VERSION_MINOR.value


class Direction(enum.IntEnum):
    """A packet's direction; pydivert 4 numbers OUTBOUND 0 and INBOUND 1."""

    OUTBOUND = 0
    INBOUND = 1


CalcChecksumsOption = enum.IntFlag(
    "CalcChecksumsOption",
    # NO_REPLACE is a WinDivert 1.x flag: WinDivert 2.2's helper ignores it, and so does this one.
    [(flag.name, flag.value) for flag in ChecksumFlag] + [("NO_REPLACE", 2048)],
    module=__name__)
CalcChecksumsOption.__doc__ = "WinDivertHelperCalcChecksums's WINDIVERT_HELPER_NO_* flags."


class Protocol(enum.IntEnum):
    """IP protocol numbers pydivert names."""

    HOPOPT = headers.IPPROTO_HOPOPTS
    ICMP = headers.IPPROTO_ICMP
    TCP = headers.IPPROTO_TCP
    UDP = headers.IPPROTO_UDP
    ROUTING = headers.IPPROTO_ROUTING
    FRAGMENT = headers.IPPROTO_FRAGMENT
    AH = headers.IPPROTO_AH
    ICMPV6 = headers.IPPROTO_ICMPV6
    NONE = 59
    DSTOPTS = headers.IPPROTO_DSTOPTS


# pydivert's list: the extension headers WinDivert walks that Protocol names (all but mobility).
IPV6_EXT_HEADERS = {protocol for protocol in Protocol if protocol in headers.IPV6_EXTENSION_HEADERS}
