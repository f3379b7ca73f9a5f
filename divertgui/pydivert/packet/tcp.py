"""pydivert's TCP header view, under pydivert's names."""

from __future__ import annotations

from divertgui.pydivert.packet.header import EngineField, Header, HeaderLength, engine_fields
from divertgui.pydivert.packet.transport import TransportPayload


@engine_fields("src_port", "dst_port", "seq_num", "ack_num", "reserved", "ns", "cwr", "ece", "urg", "ack", "psh",
               "rst", "syn", "fin", "window", "urg_ptr")
class TCPHeader(TransportPayload, Header):
    __slots__ = ()

    cksum = EngineField("checksum", invalidates=False)
    data_offset = HeaderLength("hdr_len", "TCP data offset must be between 5 and 15")

    @property
    def header_len(self) -> int:
        return self.data_offset * 4

    @property
    def control_bits(self) -> int:
        """The nine flag bits, NS (0x100) to FIN (0x001)."""
        return self._view.ns << 8 | self._view.flags

    @control_bits.setter
    def control_bits(self, value: int) -> None:
        self._view.ns = bool(value & 0x100)
        self._view.flags = value & 0xFF
        self._packet._invalidate_checksums()
