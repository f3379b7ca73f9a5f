"""pydivert's ICMP and ICMPv6 header views: type, code and checksum, the rest is payload."""

from __future__ import annotations

from divertgui.pydivert.packet.header import EngineField, Header, PayloadMixin, engine_fields


@engine_fields("type", "code")
class ICMPHeader(Header, PayloadMixin):
    __slots__ = ()

    cksum = EngineField("checksum", invalidates=False)

    @property
    def header_len(self) -> int:
        # pydivert ends the header after the checksum: the type-specific word
        # (echo id and sequence, MTU, ...) is payload.
        checksum = type(self._view).checksum
        return checksum.offset + checksum.size


class ICMPv4Header(ICMPHeader):
    __slots__ = ()


class ICMPv6Header(ICMPHeader):
    __slots__ = ()
