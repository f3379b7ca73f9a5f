"""The text shown for a stored packet (addresses, protocol, info), decoded on demand and cached.

Only rows that a view asks about are decoded, so the cost follows what is on
screen, not what is stored.
"""

from __future__ import annotations

import collections
import functools
import ipaddress

from divertgui.engine import dissect
from divertgui.engine.header_fields import IPV4, IPV4_HEADER_LEN, IPV6, IPV6_HEADER_LEN, ip_version
from divertgui.engine.pcapng import is_malformed

CACHE_ROWS = 4096


@functools.lru_cache(maxsize=4096)
def _ipv6_text(packed: bytes) -> str:
    # A capture holds few distinct addresses, and formatting one takes ipaddress tens of microseconds.
    return str(ipaddress.IPv6Address(packed))


_V4_SRC, _V4_DST = IPV4["src_addr"].span, IPV4["dst_addr"].span
_V6_SRC, _V6_DST = IPV6["src_addr"].span, IPV6["dst_addr"].span


def ip_endpoints(raw: bytes) -> tuple[str, str]:
    """Source and destination address text; "?" when the bytes are not an IP header."""
    version = ip_version(raw)
    if version == 4 and len(raw) >= IPV4_HEADER_LEN:
        return "%d.%d.%d.%d" % tuple(raw[_V4_SRC]), "%d.%d.%d.%d" % tuple(raw[_V4_DST])
    if version == 6 and len(raw) >= IPV6_HEADER_LEN:
        return _ipv6_text(bytes(raw[_V6_SRC])), _ipv6_text(bytes(raw[_V6_DST]))
    return "?", "?"


class RowText:
    """(source, destination, protocol name, info) of a store row, LRU-cached."""

    def __init__(self, store):
        self.store = store
        self._cache: collections.OrderedDict[int, tuple[str, str, str, str]] = collections.OrderedDict()

    def clear(self) -> None:
        self._cache.clear()

    def forget(self, row: int) -> None:
        self._cache.pop(row, None)

    def get(self, row: int) -> tuple[str, str, str, str]:
        cached = self._cache.get(row)
        if cached is not None:
            self._cache.move_to_end(row)
            return cached
        try:
            raw = self.store.raw(row)
            address = self.store.address(row)
        except IndexError:   # emptied by the session; the next "rows" event resets the views
            return ("", "", "", "")
        source, destination = ip_endpoints(raw)
        try:
            # Named as Wireshark names a packet its IP dissector cannot read.
            protocol = "Malformed" if is_malformed(raw) else dissect.protocol_name(raw)
            info = dissect.summary(raw, address)
        except Exception as exc:  # a malformed packet must still show as a row
            protocol, info = "?", f"undecodable: {exc}"
        text = (source, destination, protocol, info)
        self._cache[row] = text
        if len(self._cache) > CACHE_ROWS:
            self._cache.popitem(last=False)
        return text
