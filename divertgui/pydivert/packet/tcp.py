"""pydivert's TCP header view, under pydivert's names."""

from __future__ import annotations

from divertgui.pydivert.packet.header import EngineField, Header, HeaderLength
from divertgui.pydivert.packet.transport import TransportPayload


class TCPHeader(TransportPayload, Header):
    __slots__ = ()

    src_port = EngineField("src_port")
    dst_port = EngineField("dst_port")
    seq_num = EngineField("seq_num")
    ack_num = EngineField("ack_num")
    reserved = EngineField("reserved")
    ns = EngineField("ns")
    cwr = EngineField("cwr")
    ece = EngineField("ece")
    urg = EngineField("urg")
    ack = EngineField("ack")
    psh = EngineField("psh")
    rst = EngineField("rst")
    syn = EngineField("syn")
    fin = EngineField("fin")
    window = EngineField("window")
    cksum = EngineField("checksum", invalidates=False)
    urg_ptr = EngineField("urg_ptr")

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
