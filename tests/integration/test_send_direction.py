"""WinDivertSend: "only the Outbound field, and not the IP addresses in the
injected packet, determines the packet's direction"; "if pAddr->Outbound is
0, the packet is injected into the inbound path (i.e. a packet arriving to
the local machine)". On Linux the inbound path is entered on lo (see
driver/README.md, Injection)."""

import socket

import pytest

from divertgui.engine.address import Address, Flag
from divertgui.engine.handle import Divert
from divertgui.engine.packet import Packet
from tests.integration.conftest import Passthru, receive_expected, udp_socket, wait_until

pytestmark = pytest.mark.netns

PORT = 40101


def _udp(version: int, src: str, dst: str, payload: bytes) -> Packet:
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    udp = (40000).to_bytes(2, "big") + PORT.to_bytes(2, "big") + (8 + len(payload)).to_bytes(2, "big") + bytes(2)
    addresses = socket.inet_pton(family, src) + socket.inet_pton(family, dst)
    if version == 4:
        header = bytes([0x45, 0]) + (28 + len(payload)).to_bytes(2, "big") + bytes([0, 0, 0x40, 0, 64, 17, 0, 0])
    else:
        header = bytes([0x60, 0, 0, 0]) + (8 + len(payload)).to_bytes(2, "big") + bytes([17, 64])
    # Checksums left to send(): the address's checksum flags are unset.
    return Packet(header + addresses + udp + payload, Address(outbound=False, ipv6=version == 6))


@pytest.mark.parametrize("version", [4, 6])
def test_an_inbound_packet_arrives_here_whatever_its_addresses(veth, version):
    here, there = (veth.a_v4, veth.b_v4) if version == 4 else (veth.a_v6, veth.b_v6)
    with veth.b.entered():
        remote = udp_socket(there, PORT)
    with veth.a.entered():
        local = udp_socket(here, PORT)
        with Divert(f"udp.DstPort == {PORT}", priority=-5, flags=Flag.SNIFF) as below, Passthru(below, edit=lambda packet: False) as seen, \
                Divert("false", priority=5, flags=Flag.SEND_ONLY) as sender:
            # Addressed to this host: delivered to its socket, as an arriving packet.
            sender.send(_udp(version, there, here, b"arriving"))
            # Addressed to the remote host, but inbound: it arrives here (and,
            # not being for this host, which does not forward, goes no further).
            sender.send(_udp(version, here, there, b"not sent out"))
            got_local = receive_expected(local, 1)
            wait_until(lambda: seen.records, 2)
            seen.stop()
    assert got_local == [b"arriving"]
    assert receive_expected(remote, 0, quiet=0.3) == []
    # The handle below saw it on the inbound path, as a packet arriving to this host, on lo
    # (the nearest Linux has to arriving on IfIdx: driver/README.md, Injection).
    assert [(Packet(raw).payload, address.outbound, address.if_idx) for raw, address in seen.records] == \
        [(b"arriving", False, veth.a.ifindex("lo"))]
