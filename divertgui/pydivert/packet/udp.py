"""pydivert's UDP header view, under pydivert's names."""

from __future__ import annotations

from divertgui.pydivert.packet.header import EngineField, Header, engine_fields
from divertgui.pydivert.packet.transport import TransportPayload


@engine_fields("src_port", "dst_port")
class UDPHeader(TransportPayload, Header):
    __slots__ = ()

    cksum = EngineField("checksum", invalidates=False)

    @property
    def header_len(self) -> int:
        return self._view.header_len

    @property
    def payload_len(self) -> int:
        """The UDP length field less the header."""
        return self._view.length - self.header_len

    @payload_len.setter
    def payload_len(self, value: int) -> None:
        self._view.length = value + self.header_len
        self._packet._invalidate_checksums()
