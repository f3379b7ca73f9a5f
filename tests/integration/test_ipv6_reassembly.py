"""Inbound fragments, with and without FRAGMENTS, as WinDivert has them: a
handle without the flag gets the reassembled datagram and never a fragment;
a handle with it gets the fragments as they arrived. Linux reassembles IPv6
only after the INPUT hook unless conntrack's defragmentation runs in the
namespace, so the handle without the flag has the kernel do that."""

import pytest

from divertgui.engine.address import Flag
from divertgui.engine.handle import Divert
from tests.integration.conftest import Passthru, our_chains, receive_expected, udp_socket

pytestmark = pytest.mark.netns

PORT, EDITED_PORT = 9400, 9401
DATAGRAM = bytes(range(256)) * 11 + bytes(184)      # 3000 bytes: three fragments on a 1500-byte link
FRAGMENT_HEADER = 44
IPV6_UDP_HEADERS = 40 + 8


def _rewrite_port(packet) -> None:
    assert packet.dst_port == PORT
    packet.dst_port = EDITED_PORT
    packet.recalculate_checksums()


def _send_from_b(veth, count: int = 1) -> None:
    with veth.b.entered():
        client = udp_socket(veth.b_v6)
        for _ in range(count):
            client.sendto(DATAGRAM, (veth.a_v6, PORT))
        client.close()


def test_a_handle_without_fragments_gets_the_whole_datagram_and_reinjects_it_edited(veth):
    with veth.a.entered():
        server = udp_socket("::", EDITED_PORT)
        with Divert(f"inbound and udp.DstPort == {PORT}") as handle, \
                Passthru(handle, edit=_rewrite_port) as passthru:
            _send_from_b(veth, 2)
            got = receive_expected(server, 2)
            passthru.stop()
        server.close()
    assert not passthru.errors
    assert got == [DATAGRAM, DATAGRAM]
    assert len(passthru.records) == 2
    for raw, address in passthru.records:
        assert address.ipv6 and not address.outbound
        assert len(raw) == IPV6_UDP_HEADERS + len(DATAGRAM)
        assert raw[6] == 17                             # UDP straight after the IPv6 header: no fragment header


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("conntrack", [False, True], ids=["", "conntrack"])
def test_a_fragments_handle_gets_the_fragments_as_they_arrived(veth, version, conntrack):
    """Even where the machine's own rules run conntrack, whose defragmentation comes first in prerouting."""
    family, a_addr, b_addr = ("ip", veth.a_v4, veth.b_v4) if version == 4 else ("ip6", veth.a_v6, veth.b_v6)
    if conntrack:
        veth.a.exec("nft", f"add table {family} machine; add chain {family} machine c; "
                           f"add rule {family} machine c ct state established counter")
    with veth.a.entered():
        server = udp_socket(a_addr, PORT)
        with Divert("inbound and fragment", flags=Flag.FRAGMENTS) as handle, Passthru(handle) as passthru:
            with veth.b.entered():
                udp_socket(b_addr).sendto(DATAGRAM, (a_addr, PORT))
            got = receive_expected(server, 1)
            passthru.stop()
        server.close()
    assert got == [DATAGRAM]
    if version == 6:
        _assert_fragments(passthru.records)
    else:
        assert len(passthru.records) == 3
        assert sum(len(raw) - 20 for raw, _ in passthru.records) == 8 + len(DATAGRAM)
        assert all(int.from_bytes(raw[6:8], "big") & 0x3FFF for raw, _ in passthru.records)


def test_both_kinds_in_one_namespace_each_see_what_windivert_gives_them(veth):
    """The FRAGMENTS handle sees each fragment before the kernel reassembles them, the other
    the reassembled datagram, which it edits."""
    with veth.a.entered():
        server = udp_socket("::", EDITED_PORT)
        with Divert("inbound and ipv6 and fragment", priority=100, flags=Flag.FRAGMENTS) as fragments, \
                Passthru(fragments) as fragment_passthru, \
                Divert(f"inbound and udp.DstPort == {PORT}") as whole, \
                Passthru(whole, edit=_rewrite_port) as whole_passthru:
            _send_from_b(veth)
            got = receive_expected(server, 1)
            fragment_passthru.stop()
            whole_passthru.stop()
        server.close()
    assert got == [DATAGRAM]
    _assert_fragments(fragment_passthru.records)
    assert [(len(raw), raw[6]) for raw, _ in whole_passthru.records] == [(IPV6_UDP_HEADERS + len(DATAGRAM), 17)]


def _assert_fragments(records) -> None:
    assert len(records) == 3
    payload = 0
    for raw, address in records:
        assert address.ipv6 and not address.outbound
        assert raw[6] == FRAGMENT_HEADER and len(raw) <= 1500
        payload += len(raw) - 40 - 8
    assert payload == 8 + len(DATAGRAM)                # the UDP header and the data, each byte once


def _tracked_ports(ns) -> set[int]:
    """Destination ports of the UDP flows conntrack tracks in the namespace."""
    table = ns.exec("cat", "/proc/net/nf_conntrack").stdout
    return {int(field.split("=")[1]) for line in table.splitlines() if " udp " in f" {line} "
            for field in line.split()[:12] if field.startswith("dport=")}


def test_conntrack_runs_only_while_such_a_handle_is_open(veth):
    """What turns IPv6 reassembly on goes when the last handle needing it closes, even while other
    handles stay: later traffic is not tracked."""
    with veth.a.entered():
        server = udp_socket("::", PORT)
        with Divert("inbound and tcp", flags=Flag.FRAGMENTS):
            with Divert(f"inbound and udp.DstPort == {PORT}") as handle, Passthru(handle):
                assert "ip6 divertgui reassembly" in our_chains(veth.a)
                _send_from_b(veth)
                assert receive_expected(server, 1) == [DATAGRAM]
            assert "ip6 divertgui reassembly" not in our_chains(veth.a)
        assert PORT in _tracked_ports(veth.a)
        later = udp_socket("::", EDITED_PORT)
        with veth.b.entered():
            udp_socket(veth.b_v6).sendto(b"after", (veth.a_v6, EDITED_PORT))
        assert receive_expected(later, 1) == [b"after"]
        server.close()
        later.close()
    assert EDITED_PORT not in _tracked_ports(veth.a)
