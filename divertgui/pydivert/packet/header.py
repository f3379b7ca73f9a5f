"""pydivert's header base and mixins, over the engine's header views."""

from __future__ import annotations

from divertgui.pydivert.util import raw_property


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


def engine_fields(*names: str):
    """A class decorator adding an EngineField for each field pydivert names as the engine does."""

    def add(cls):
        for name in names:
            setattr(cls, name, EngineField(name))
        return cls

    return add


class HeaderLength(EngineField):
    """A header length in 32-bit words, 5 to 15, refused otherwise with pydivert's message."""

    __slots__ = ("message",)

    def __init__(self, name: str, message: str):
        super().__init__(name)
        self.message = message

    def __set__(self, header, value):
        if not 5 <= value <= 15:
            raise ValueError(self.message)
        super().__set__(header, value)


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

    src_port = raw_property("!H", 0)
    dst_port = raw_property("!H", 2)
