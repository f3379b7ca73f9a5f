"""What WinDivertSend does with the address's checksum and impostor flags,
and what the checksum and impostor flags of a received packet say."""

import socket
import struct
import threading

import pytest

from divertgui.engine.address import Address, Flag
from divertgui.engine.checksum import calc_checksums, checksums_valid
from divertgui.engine.errors import HostUnreachableError
from divertgui.engine.handle import Divert
from divertgui.engine.packet import Packet
from tests.integration.conftest import Passthru, receive_expected, udp_socket, wait_until

pytestmark = pytest.mark.netns

PORT = 40091
IP_RECVTTL = 12


def _udp(src: str, dst: str, payload: bytes, ttl: int = 64, good_checksum: bool = True) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), 0, 0x4000, ttl, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    raw = bytearray(ip + struct.pack("!HHHH", 40000, PORT, 8 + len(payload), 0) + payload)
    calc_checksums(raw)
    if not good_checksum:
        raw[26] ^= 0x5A
    return bytes(raw)


def test_an_unset_checksum_flag_has_the_checksum_filled_in(veth):
    # WinDivertSend: "Injected packets must have the correct checksums or have
    # the corresponding *Checksum flag unset." A zeroed WINDIVERT_ADDRESS has
    # every flag unset, so Address() must too.
    assert (Address().ip_checksum, Address().tcp_checksum, Address().udp_checksum) == (False, False, False)
    with veth.b.entered():
        server = udp_socket(veth.b_v4, PORT)
    with veth.a.entered(), Divert("false", flags=Flag.SEND_ONLY) as sender:
        sender.send(Packet(_udp(veth.a_v4, veth.b_v4, b"filled in", good_checksum=False), Address(outbound=True)))
        # A set flag promises a correct checksum: the bytes go as they are, and b's stack drops them.
        sender.send(Packet(_udp(veth.a_v4, veth.b_v4, b"sent as is", good_checksum=False),
                           Address(outbound=True, ip_checksum=True, udp_checksum=True)))
    assert receive_expected(server, 1) == [b"filled in"]


def test_received_checksum_flags_say_whether_the_checksum_is_valid(netns):
    # WINDIVERT_ADDRESS: "TCPChecksum: Set to 1 if the TCP checksum is valid,
    # 0 otherwise." Loopback TCP leaves its checksum to "offload"
    # (CHECKSUM_PARTIAL): a sniffed copy has it unfinished.
    with netns.entered():
        listener = socket.create_server(("127.0.0.1", PORT))
        with Divert(f"tcp.DstPort == {PORT} or tcp.SrcPort == {PORT}", flags=Flag.SNIFF) as sniffer, \
                Passthru(sniffer, edit=lambda packet: False) as seen:
            client = socket.create_connection(("127.0.0.1", PORT), timeout=2)
            server, _ = listener.accept()
            client.sendall(b"checksum offload")
            assert server.recv(100) == b"checksum offload"
            client.close()
            server.close()
            wait_until(lambda: len(seen.records) >= 5, 3)
            seen.stop()
    assert len(seen.records) >= 5
    flags = [(address.ip_checksum, address.tcp_checksum) for _raw, address in seen.records]
    assert flags == [checksums_valid(raw)[:2] for raw, _address in seen.records]
    assert any(not tcp for _ip, tcp in flags)


def test_an_impostor_has_its_ttl_decremented_and_is_refused_at_zero(veth):
    # WinDivertSend: "For impostor packets (where pAddr->Impostor is set to 1)
    # WinDivert will automatically decrement the ip.TTL or ipv6.HopLimit
    # fields before reinjection", and fails with ERROR_HOST_UNREACHABLE
    # "when an impostor packet ... is injected and the ip.TTL or
    # ipv6.HopLimit field goes to zero".
    with veth.b.entered():
        server = udp_socket(veth.b_v4, PORT)
        server.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
    with veth.a.entered(), Divert("false", flags=Flag.SEND_ONLY) as sender:
        sender.send(Packet(_udp(veth.a_v4, veth.b_v4, b"ttl 5", ttl=5), Address(outbound=True, impostor=True)))
        with pytest.raises(HostUnreachableError, match="ERROR_HOST_UNREACHABLE"):
            sender.send(Packet(_udp(veth.a_v4, veth.b_v4, b"ttl 1", ttl=1), Address(outbound=True, impostor=True)))
    data, ancillary, _flags, _peer = server.recvmsg(100, socket.CMSG_SPACE(4))
    assert data == b"ttl 5"
    assert [int.from_bytes(cdata, "little") for level, kind, cdata in ancillary if kind == 2] == [4]
    assert receive_expected(server, 0) == []


def test_packets_a_higher_handle_injects_are_no_impostors_below(netns):
    # "An impostor packet is any packet injected by another driver rather than
    # originating from the network or Windows TCP/IP stack": what a handle of
    # ours injects is not one, so `!impostor` does not hide it.
    with netns.entered():
        server = udp_socket("127.0.0.1", PORT)
        with Divert(f"udp.DstPort == {PORT}", priority=10) as high, \
                Divert(f"udp.DstPort == {PORT} and !impostor", priority=-10) as low, Passthru(low) as below:
            udp_socket("127.0.0.1").sendto(b"original", ("127.0.0.1", PORT))
            original = high.recv(timeout=2)
            copy = Packet(original.raw, original.address.copy())
            copy.payload = b"a copy"
            copy.recalculate_checksums()
            high.send(copy)             # a new packet: injected
            high.send(original)         # the original: released
            got = receive_expected(server, 2)
            below.stop()
    assert sorted(got) == [b"a copy", b"original"]
    assert sorted(Packet(raw).payload for raw, _address in below.records) == [b"a copy", b"original"]
    assert not any(address.impostor for _raw, address in below.records)
