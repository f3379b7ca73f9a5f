"""pydivert's IPv4 and IPv6 header views, under pydivert's names."""

from __future__ import annotations

import socket

from divertgui.pydivert.packet.header import EngineField, Header, HeaderLength, engine_fields


@engine_fields("src_addr", "dst_addr")
class IPHeader(Header):
    __slots__ = ()

    @property
    def packet_len(self) -> int:
        return len(self._packet.raw)


@engine_fields("tos", "dscp", "ecn", "ttl", "protocol", "flags", "frag_offset", "df", "mf")
class IPv4Header(IPHeader):
    __slots__ = ()
    _af = socket.AF_INET

    diff_serv = EngineField("dscp")
    packet_len = EngineField("length")
    ident = EngineField("id")
    cksum = EngineField("checksum", invalidates=False)
    rf = evil = reserved = EngineField("reserved_flag")

    hdr_len = HeaderLength("hdr_len", "IP header length must be between 5 and 15")

    @property
    def header_len(self) -> int:
        return self._view.header_len


@engine_fields("next_hdr", "hop_limit", "traffic_class", "flow_label")
class IPv6Header(IPHeader):
    __slots__ = ()
    _af = socket.AF_INET6
    header_len = 40

    payload_len = EngineField("length")

    @property
    def packet_len(self) -> int:
        return self.payload_len + self.header_len

    @packet_len.setter
    def packet_len(self, value: int) -> None:
        self.payload_len = value - self.header_len

    # The traffic class is DSCP (6 bits) then ECN (2 bits), as in IPv4's TOS byte.
    @property
    def ecn(self) -> int:
        return self.traffic_class & 0x03

    @ecn.setter
    def ecn(self, value: int) -> None:
        self.traffic_class = (self.traffic_class & ~0x03) | (value & 0x03)

    @property
    def diff_serv(self) -> int:
        return self.traffic_class >> 2

    @diff_serv.setter
    def diff_serv(self, value: int) -> None:
        self.traffic_class = (value << 2) | self.ecn

    dscp = diff_serv
