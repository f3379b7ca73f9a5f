"""pydivert's header base and mixins, over the engine's header views."""

from __future__ import annotations

import struct


class EngineField:
    """A pydivert header attribute kept in the engine view's field `name`.

    Setting it clears the packet's checksum flags, as pydivert does, so that
    an edited packet is not sent claiming checksums it no longer has.
    """

    __slots__ = ("name", "invalidates")

    def __init__(self, name: str, invalidates: bool = True):
        self.name = name
        self.invalidates = invalidates

    def __get__(self, header, owner=None):
        if header is None:
            return self
        return getattr(header._view, self.name)

    def __set__(self, header, value):
        setattr(header._view, self.name, value)
        if self.invalidates:
            header._packet._invalidate_checksums()


class Header:
    """A header of a Packet at a fixed offset; `_view` is the engine's view of it."""

    __slots__ = ("_packet", "_view")

    def __init__(self, packet, view) -> None:
        self._packet = packet
        self._view = view

    @property
    def _start(self) -> int:
        return self._view.offset

    @property
    def raw(self) -> memoryview:
        """The header and everything after it in the packet."""
        return self._packet.raw[self._start:]

    @raw.setter
    def raw(self, value) -> None:
        packet = self._packet
        value = bytes(value)
        size = len(packet.raw)
        if len(value) == size - self._start:
            # Through the engine packet, which then parses its headers again;
            # the views of this packet stay, as in pydivert.
            packet._packet.raw = packet.raw[:self._start].tobytes() + value
        else:
            packet._resize(self._start, size, value)
        packet._invalidate_checksums()


class RawProtocol:
    """What the mixins need: a writable `raw` memoryview."""

    @property
    def raw(self) -> memoryview:
        raise NotImplementedError

    @raw.setter
    def raw(self, value) -> None:
        raise NotImplementedError


class PayloadMixin(RawProtocol):
    """`payload`: the bytes of `raw` after `header_len`."""

    @property
    def header_len(self) -> int:
        raise NotImplementedError

    @property
    def payload(self) -> bytes:
        return self.raw[self.header_len:].tobytes()

    @payload.setter
    def payload(self, value) -> None:
        if len(value) == len(self.raw) - self.header_len:
            self.raw[self.header_len:] = value
        else:
            self.raw = self.raw[:self.header_len].tobytes() + bytes(value)


class PortMixin(RawProtocol):
    """`src_port` and `dst_port`: the first two 16-bit words of `raw`."""

    @property
    def src_port(self) -> int:
        return struct.unpack_from("!H", self.raw, 0)[0]

    @src_port.setter
    def src_port(self, value: int) -> None:
        self.raw[0:2] = struct.pack("!H", value)

    @property
    def dst_port(self) -> int:
        return struct.unpack_from("!H", self.raw, 2)[0]

    @dst_port.setter
    def dst_port(self, value: int) -> None:
        self.raw[2:4] = struct.pack("!H", value)
