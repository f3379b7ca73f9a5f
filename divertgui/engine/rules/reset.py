"""Reset: cut TCP connections with an RST to each end."""

from __future__ import annotations

from divertgui.engine.packet import Packet
from divertgui.engine.rules.base import Rule, chance

_FIN, _SYN, _RST, _ACK = 0x01, 0x02, 0x04, 0x10


def reverse_rst(packet) -> Packet:
    """An RST from the packet's destination back to its sender, with the sequence
    number the sender expects next (the packet's acknowledgement number)."""
    tcp = packet.tcp
    ipv6 = packet.ipv6 is not None
    sent = len(packet.payload or b"") + (1 if tcp.flags & _SYN else 0) + (1 if tcp.flags & _FIN else 0)
    if ipv6:
        header = bytearray(40)
        header[0] = 0x60
        header[4:6] = (20).to_bytes(2, "big")
        header[6], header[7] = 6, 64
        raw = bytearray(packet.raw)
        header[8:24], header[24:40] = raw[24:40], raw[8:24]
    else:
        header = bytearray(20)
        header[0], header[8], header[9] = 0x45, 64, 6
        header[2:4] = (40).to_bytes(2, "big")
        header[6] = 0x40
        raw = bytearray(packet.raw)
        header[12:16], header[16:20] = raw[16:20], raw[12:16]
    segment = bytearray(20)
    segment[0:2] = tcp.dst_port.to_bytes(2, "big")
    segment[2:4] = tcp.src_port.to_bytes(2, "big")
    if tcp.flags & _ACK:
        segment[4:8] = tcp.ack_num.to_bytes(4, "big")
    segment[8:12] = ((tcp.seq_num + sent) & 0xFFFFFFFF).to_bytes(4, "big")
    segment[12] = 5 << 4
    segment[13] = _RST | _ACK
    address = packet.address
    # Loopback traffic is seen on the outbound path only, both ways.
    outbound = address.outbound if address.loopback else not address.outbound
    rst = Packet(header + segment, address.copy(outbound=outbound, impostor=False, ipv6=ipv6))
    rst.recalculate_checksums()
    return rst


def into_rst(packet) -> None:
    """Turn a TCP packet, in place, into an RST that its receiver accepts: same
    sequence number, no payload."""
    packet.payload = b""
    tcp = packet.tcp
    tcp.flags = _RST | (tcp.flags & _ACK)
    packet.recalculate_checksums()


class Reset(Rule):
    """With `chance` percent a matching TCP packet (not itself an RST) becomes an RST
    to its receiver, and an RST is sent back to its sender: both ends see the
    connection reset."""

    kind = "reset"
    params = {"chance": chance(0.0)}

    def setup(self) -> None:
        self.counters["reset"] = 0

    def process(self, packet, now_ns: int, out: list) -> None:
        tcp = packet.tcp if self.chance > 0 else None
        if tcp is None or tcp.rst or not self.hit(self.chance):
            out.append(packet)
            return
        back = reverse_rst(packet)
        into_rst(packet)
        out.append(packet)
        out.append(back)
        self.counters["reset"] += 1
        self.counters["modified"] += 1
        self.counters["injected"] += 1
