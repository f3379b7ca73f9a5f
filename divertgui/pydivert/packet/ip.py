"""pydivert's IPv4 and IPv6 header views, under pydivert's names."""

from __future__ import annotations

import socket

from divertgui.pydivert.packet.header import EngineField, Header, HeaderLength


class IPHeader(Header):
    __slots__ = ()

    src_addr = EngineField("src_addr")
    dst_addr = EngineField("dst_addr")

    @property
    def packet_len(self) -> int:
        return len(self._packet.raw)


class IPv4Header(IPHeader):
    __slots__ = ()
    _af = socket.AF_INET

    tos = EngineField("tos")
    diff_serv = dscp = EngineField("dscp")
    ecn = EngineField("ecn")
    packet_len = EngineField("length")
    ident = EngineField("id")
    ttl = EngineField("ttl")
    protocol = EngineField("protocol")
    cksum = EngineField("checksum", invalidates=False)
    flags = EngineField("flags")
    frag_offset = EngineField("frag_offset")
    rf = evil = reserved = EngineField("reserved_flag")
    df = EngineField("df")
    mf = EngineField("mf")

    hdr_len = HeaderLength("hdr_len", "IP header length must be between 5 and 15")

    @property
    def header_len(self) -> int:
        return self._view.header_len


class IPv6Header(IPHeader):
    __slots__ = ()
    _af = socket.AF_INET6
    header_len = 40

    payload_len = EngineField("length")
    next_hdr = EngineField("next_hdr")
    hop_limit = EngineField("hop_limit")
    traffic_class = EngineField("traffic_class")
    flow_label = EngineField("flow_label")

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
