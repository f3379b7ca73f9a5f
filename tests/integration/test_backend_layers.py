"""The NETWORK_FORWARD layer, and inbound fragments with the FRAGMENTS flag."""

import pytest

from divertgui.engine.address import Flag, Layer
from divertgui.engine.handle import Divert
from tests.integration.conftest import Passthru, receive_expected, udp_socket

pytestmark = pytest.mark.netns

PORT = 40061


@pytest.mark.parametrize("version", [4, 6])
def test_forwarded_packets_are_diverted_at_the_forward_layer(routed, backend, version):
    a_addr, b_addr = (routed.a_v4, routed.b_v4) if version == 4 else (routed.a_v6, routed.b_v6)
    r_out = routed.r.ifindex("eth1")
    with routed.b.entered():
        server = udp_socket(b_addr, PORT)
    with routed.r.entered(), \
            Divert(f"udp.DstPort == {PORT}", layer=Layer.NETWORK_FORWARD, backend=backend()) as handle, \
            Passthru(handle) as passthru:
        with routed.a.entered():
            client = udp_socket(a_addr)
            for i in range(3):
                client.sendto(b"routed %d" % i, (b_addr, PORT))
        got = receive_expected(server, 3)
        passthru.stop()
    assert sorted(got) == [b"routed %d" % i for i in range(3)]
    assert len(passthru.records) == 3
    for raw, address in passthru.records:
        assert address.layer == Layer.NETWORK_FORWARD and address.ipv6 == (version == 6)
        # As WinDivert's driver has it: a forwarded packet is outbound, on the interface it leaves by.
        assert address.outbound and address.if_idx == r_out


@pytest.mark.parametrize("fragments", [False, True], ids=["reassembled", "FRAGMENTS"])
@pytest.mark.backend_differs("pydivert", when={"fragments": False},
                             xfail="libebpfdivert hooks tc ingress, before IP reassembly: without FRAGMENTS an "
                                   "inbound fragmented datagram is not diverted at all (WinDivert diverts it "
                                   "once, reassembled)")
def test_inbound_fragments_only_with_the_flag(veth, backend, fragments):
    big = bytes(range(256)) * 12            # 3072 bytes: three fragments on a 1500-byte link
    with veth.b.entered():
        server = udp_socket(veth.b_v4, PORT)
        flags = Flag.FRAGMENTS if fragments else Flag(0)
        with Divert(f"inbound and (fragment or udp.DstPort == {PORT})", flags=flags, backend=backend()) as handle, \
                Passthru(handle) as passthru:
            with veth.a.entered():
                udp_socket(veth.a_v4).sendto(big, (veth.b_v4, PORT))
            got = receive_expected(server, 1)
            passthru.stop()
    assert got == [big]
    sizes = sorted(len(raw) for raw, _ in passthru.records)
    if fragments:
        assert len(sizes) == 3 and max(sizes) <= 1500
        assert all(raw[6] & 0x20 or raw[6] & 0x1F or raw[7] for raw, _ in passthru.records)
    else:
        assert sizes == [20 + 8 + len(big)]
