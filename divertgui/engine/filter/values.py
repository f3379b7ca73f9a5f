"""Number and address literals of the filter language."""

from __future__ import annotations

import ipaddress
import re

MAX_VALUE = (1 << 128) - 1
_DECIMAL = re.compile(r"[0-9]{1,40}\Z")
_HEX = re.compile(r"0[xX][0-9a-fA-F]{0,32}\Z")
_IPV4 = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\Z")
_IPV6 = re.compile(r"[0-9a-fA-F:.]+\Z")
IPV4_MAPPED = 0xFFFF00000000


def parse_value(word: str) -> int | None:
    """The number a literal stands for, None when it is not a literal."""
    if _HEX.match(word):
        return int(word[2:] or "0", 16)
    if _DECIMAL.match(word):
        value = int(word)
        return value if value <= MAX_VALUE else None
    match = _IPV4.match(word)
    if match:
        parts = [int(p) for p in match.groups()]
        if max(parts) > 255:
            return None
        return IPV4_MAPPED | (parts[0] << 24) | (parts[1] << 16) | (parts[2] << 8) | parts[3]
    if ":" in word and _IPV6.match(word):
        try:
            return int(ipaddress.IPv6Address(word))
        except ValueError:
            return None
    return None
