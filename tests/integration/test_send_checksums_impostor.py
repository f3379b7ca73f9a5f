"""What WinDivertSend does with the address's checksum and impostor flags,
and what the checksum and impostor flags of a received packet say."""

import socket
import struct
import threading

import pytest

from divertgui.engine.address import Address, Flag
from divertgui.engine.backends import nfqueue
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


def _peer_traffic(veth) -> tuple[list[bytes], list[bytes]]:
    """From a to b: UDP over IPv4 and IPv6 and a TCP exchange from a's sockets (their checksums
    offloaded, CHECKSUM_PARTIAL), and UDP built on a raw socket (checksum in the bytes), one
    datagram with its checksum right and one wrong; b answers over UDP.
    Returns (what b's UDP sockets received, what a's received)."""
    with veth.b.entered():
        server4, server6 = udp_socket(veth.b_v4, PORT), udp_socket(veth.b_v6, PORT)
        listener = socket.create_server((veth.b_v4, PORT))
    with veth.a.entered():
        client = udp_socket(veth.a_v4)
        client.sendto(b"peer v4", (veth.b_v4, PORT))
        udp_socket(veth.a_v6).sendto(b"peer v6", (veth.b_v6, PORT))
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
            raw.sendto(_udp(veth.a_v4, veth.b_v4, b"raw right"), (veth.b_v4, 0))
            raw.sendto(_udp(veth.a_v4, veth.b_v4, b"raw wrong", good_checksum=False), (veth.b_v4, 0))
        with socket.create_connection((veth.b_v4, PORT), timeout=2) as tcp:
            tcp.sendall(b"peer tcp")
            with veth.b.entered():
                accepted, _ = listener.accept()
            with accepted:
                assert accepted.recv(100) == b"peer tcp"
                accepted.sendall(b"b's tcp")
            assert tcp.recv(100) == b"b's tcp"
    got = sorted(receive_expected(server4, 3) + receive_expected(server6, 1))
    with veth.b.entered():
        server4.sendto(b"b's udp", client.getsockname())
    return got, receive_expected(client, 1)


def test_diverted_checksum_flags_take_the_kernels_word_where_it_has_one(veth, monkeypatch):
    # WINDIVERT_ADDRESS: "Set to 1 if the ... checksum is valid". The kernel
    # says which arriving packets' checksums it has not verified
    # (NFQA_SKB_CSUM_NOTVERIFIED); only those are checked in user space.
    checked = []

    def checks(raw):
        checked.append(raw)
        return checksums_valid(raw)

    monkeypatch.setattr(nfqueue, "checksums_valid", checks)
    with veth.b.entered(), Divert(f"tcp.DstPort == {PORT} or tcp.SrcPort == {PORT} or "
                                  f"udp.DstPort == {PORT} or udp.SrcPort == {PORT}") as handle, \
            Passthru(handle) as seen:
        received, answered = _peer_traffic(veth)
        wait_until(lambda: len(seen.records) >= 9, 3)
        seen.stop()
    assert seen.errors == []
    # Sent on with its flag at 0, the wrong checksum was computed (WinDivertSend).
    assert received == [b"peer v4", b"peer v6", b"raw right", b"raw wrong"]
    assert answered == [b"b's udp"]
    payloads = [Packet(raw).payload for raw, _address in seen.records]
    for wanted in (b"peer v4", b"peer v6", b"peer tcp", b"b's tcp", b"b's udp", b"raw right", b"raw wrong"):
        assert wanted in payloads
    flags = [(address.ip_checksum, address.tcp_checksum, address.udp_checksum) for _raw, address in seen.records]
    # The same flags as checking every packet's bytes would give.
    assert flags == [checksums_valid(raw) for raw, _address in seen.records]
    assert [flag for flag, payload in zip(flags, payloads) if payload == b"raw wrong"] == [(True, True, False)]
    assert all(address.outbound for raw, address in seen.records if Packet(raw).payload in (b"b's tcp", b"b's udp"))
    # Checked here: the raw socket's datagram with the wrong checksum (and no packet of a's
    # sockets, whose checksums the kernel completed on the way).
    assert b"raw wrong" in [Packet(raw).payload for raw in checked]
    assert all(Packet(raw).payload.startswith(b"raw ") for raw in checked)


def test_a_packet_a_higher_handle_edited_is_checked_again_below(veth):
    # conntrack verifies a raw socket's checksum on arrival, and the kernel
    # keeps that answer through an edit (its own UDP receive then takes the
    # edited datagram). The edit made above breaks the checksum (a set flag
    # sends the bytes as they are), and the handle below must say so.
    veth.b.exec("nft", "add table ip dgtest; add chain ip dgtest input { type filter hook input priority 0; }; "
                       "add rule ip dgtest input ct state invalid accept")
    with veth.b.entered():
        with Divert(f"udp.DstPort == {PORT}", priority=10) as high, \
                Divert(f"udp.DstPort == {PORT}", priority=-10) as low, Passthru(low) as below:
            with veth.a.entered(), socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
                raw.sendto(_udp(veth.a_v4, veth.b_v4, b"right"), (veth.b_v4, 0))
            packet = high.recv(timeout=2)
            assert (packet.address.ip_checksum, packet.address.udp_checksum) == (True, True)
            packet.payload = b"wrong"
            high.send(packet)
            wait_until(lambda: below.records, 3)
            below.stop()
    assert [(Packet(raw).payload, address.udp_checksum) for raw, address in below.records] == [(b"wrong", False)]


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
