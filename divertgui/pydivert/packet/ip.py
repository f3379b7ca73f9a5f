"""pydivert's IPv4 and IPv6 header views, under pydivert's names."""

from __future__ import annotations

import socket

from divertgui.engine import header_fields as headers
from divertgui.pydivert.packet.header import EngineField, Header, HeaderLength, engine_fields

_DSCP, _ECN = headers.TRAFFIC_CLASS_DSCP, headers.TRAFFIC_CLASS_ECN


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
    header_len = headers.IPV6_HEADER_LEN

    payload_len = EngineField("length")

    @property
    def packet_len(self) -> int:
        return self.payload_len + self.header_len

    @packet_len.setter
    def packet_len(self, value: int) -> None:
        self.payload_len = value - self.header_len

    @property
    def ecn(self) -> int:
        return self.traffic_class >> _ECN.shift & _ECN.mask

    @ecn.setter
    def ecn(self, value: int) -> None:
        self.traffic_class = self.diff_serv << _DSCP.shift | (value & _ECN.mask) << _ECN.shift

    @property
    def diff_serv(self) -> int:
        return self.traffic_class >> _DSCP.shift & _DSCP.mask

    @diff_serv.setter
    def diff_serv(self, value: int) -> None:
        self.traffic_class = (value << _DSCP.shift) | self.ecn << _ECN.shift

    dscp = diff_serv
