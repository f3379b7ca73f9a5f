"""pydivert's small helpers."""

from __future__ import annotations

import struct

from divertgui.engine.checksum import internet_checksum as _fold


def fromhex(text: str) -> bytes:
    return bytes.fromhex(text)


def flag_property(name: str, offset: int, bit: int, docs: str | None = None) -> property:
    """A bool property over bit `bit` of byte `offset` of `self.raw`."""

    def get(self) -> bool:
        return bool(self.raw[offset] & bit)

    def put(self, value: bool) -> None:
        if value:
            self.raw[offset] |= bit
        else:
            self.raw[offset] &= ~bit & 0xFF

    return property(get, put, doc=docs or f"Indicates if the {name.upper()} flag is set.")


def raw_property(fmt: str, offset: int, docs: str | None = None) -> property:
    """A property over the struct `fmt` at `offset` of `self.raw`."""

    def get(self):
        return struct.unpack_from(fmt, self.raw, offset)[0]

    def put(self, value) -> None:
        struct.pack_into(fmt, self.raw, offset, value)

    return property(get, put, doc=docs)


def internet_checksum(data) -> int:
    """The RFC 1071 checksum of `data` (an odd length is padded with a zero byte)."""
    data = bytes(data)
    if len(data) % 2:
        data += b"\0"
    return _fold(int.from_bytes(data, "big"))
