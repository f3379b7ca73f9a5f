"""With the kernel prefilter, traffic the filter does not match never reaches
user space (the handle's counters say so), and matching traffic does."""

import os
import socket

import pytest

from divertgui.engine.backends import netlink, nftables
from divertgui.engine.backends.netfilter_rules import mark_masked, packet_matches
from divertgui.engine.backends.nfqueue import NfqueueBackend
from divertgui.engine.filter.kernel import kernel_test, xt_bpf_available
from divertgui.engine.handle import Divert
from tests.integration.conftest import Passthru, icmp_echo, receive_all, udp_socket, wait_until

pytestmark = pytest.mark.netns

PORT, OTHER_PORT = 40101, 40102
COUNT = 20


def _require_xt_bpf():
    if not xt_bpf_available():
        reason = "the kernel has no xt_bpf match (CONFIG_NETFILTER_XT_MATCH_BPF)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"missing prerequisite in CI: {reason}")
        pytest.skip(reason)


def _prefiltered(text: str) -> Divert:
    return Divert(text, backend=NfqueueBackend(kernel_prefilter=kernel_test))


@pytest.mark.parametrize("version", [4, 6])
def test_non_matching_udp_never_reaches_user_space(veth, version):
    _require_xt_bpf()
    a_addr, b_addr = (veth.a_v4, veth.b_v4) if version == 4 else (veth.a_v6, veth.b_v6)
    with veth.b.entered():
        server = udp_socket(b_addr, PORT)
        other = udp_socket(b_addr, OTHER_PORT)
        with _prefiltered(f"udp.DstPort == {PORT}") as handle, Passthru(handle) as passthru:
            with veth.a.entered():
                client = udp_socket(a_addr)
                for i in range(COUNT):
                    client.sendto(b"match %d" % i, (b_addr, PORT))
                    client.sendto(b"other %d" % i, (b_addr, OTHER_PORT))
            matched = receive_all(server, 0.5)
            elsewhere = receive_all(other, 0.3)
            wait_until(lambda: len(passthru.records) >= COUNT, 2)
            passthru.stop()
            stats = handle.stats()
    assert not passthru.errors
    assert len(matched) == COUNT and len(elsewhere) == COUNT
    assert stats["diverted"] == COUNT
    assert stats["rejected"] == 0, stats  # nothing the filter rejects was queued
    assert all(raw[0] >> 4 == version for raw, _ in passthru.records)


def test_tcp_handshake_flags_and_icmp_types_are_decided_in_the_kernel(veth):
    _require_xt_bpf()
    with veth.b.entered():
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((veth.b_v4, PORT))
        listener.listen(4)
        listener.settimeout(5)
        text = f"(tcp.Syn and not tcp.Ack and tcp.DstPort == {PORT}) or icmp.Type == 8"
        with _prefiltered(text) as handle, Passthru(handle) as passthru:
            with veth.a.entered():
                clients = [socket.create_connection((veth.b_v4, PORT), timeout=5) for _ in range(3)]
                for client in clients:
                    client.sendall(b"data that no rule wants")
                replies = icmp_echo(veth.b_v4, 2)
            conns = [listener.accept()[0] for _ in clients]
            got = [conn.recv(100) for conn in conns]
            passthru.stop()
            stats = handle.stats()
    assert not passthru.errors
    assert replies == 2 and got == [b"data that no rule wants"] * 3
    assert stats["diverted"] == 3 + 2, (stats, passthru.records)   # three SYNs, two echo requests
    assert stats["rejected"] == 0, stats


def test_loopback_ipv6_address_test_in_the_kernel(netns):
    _require_xt_bpf()
    with netns.entered():
        server = udp_socket("::1", PORT)
        with _prefiltered(f"ipv6.DstAddr == ::1 and udp.DstPort == {PORT}") as handle, Passthru(handle) as passthru:
            client = udp_socket("::1")
            v4_server = udp_socket("127.0.0.1", PORT)
            v4_client = udp_socket("127.0.0.1")
            for i in range(5):
                client.sendto(b"six %d" % i, ("::1", PORT))
                client.sendto(b"elsewhere %d" % i, ("::1", OTHER_PORT))
                v4_client.sendto(b"four %d" % i, ("127.0.0.1", PORT))
            got = receive_all(server, 0.5)
            got_v4 = receive_all(v4_server, 0.3)
            passthru.stop()
            stats = handle.stats()
    assert not passthru.errors
    assert len(got) == 5 and len(got_v4) == 5
    assert stats["diverted"] == 5 and stats["rejected"] == 0, stats
    assert all(address.loopback and address.outbound for _, address in passthru.records)


def test_ipv6_port_filters_are_native_rules_that_miss_nothing_behind_extension_headers(veth):
    """The kernel's rules for an IPv6 port filter have no bpf match; packets behind a header the kernel
    does not walk past (a mobility header, AH) reach the handle whole, and the filter decides there."""
    from tests.unit.test_filter_kernel import ipv6_udp
    with veth.b.entered():
        server = udp_socket(veth.b_v6, PORT)
        other = udp_socket(veth.b_v6, OTHER_PORT)
        with _prefiltered(f"udp.DstPort == {PORT}") as handle, Passthru(handle) as passthru:
            ruleset = veth.b.exec("nft", "list", "table", "ip6", "divertgui").stdout
            with veth.a.entered():
                client = udp_socket(veth.a_v6)
                for i in range(COUNT):
                    client.sendto(b"match %d" % i, (veth.b_v6, PORT))
                    client.sendto(b"other %d" % i, (veth.b_v6, OTHER_PORT))
                raw = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
                for chain, port in (([135], PORT), ([60, 51], PORT), ([51], OTHER_PORT)):
                    raw.sendto(ipv6_udp(chain, port, source=veth.a_v6, destination=veth.b_v6), (veth.b_v6, 0))
            matched = receive_all(server, 0.5)
            elsewhere = receive_all(other, 0.3)
            wait_until(lambda: len(passthru.records) >= COUNT + 2 and handle.stats()["rejected"] >= 1, 2)
            passthru.stop()
            stats = handle.stats()
    assert not passthru.errors
    assert "bpf" not in ruleset and "meta l4proto" in ruleset, ruleset
    assert len(matched) == COUNT and len(elsewhere) == COUNT
    behind = [packet for packet, _ in passthru.records if packet[6] != 17]
    assert sorted(packet[6] for packet in behind) == [60, 135], passthru.records
    assert stats["diverted"] == COUNT + 2, stats
    assert stats["rejected"] == 1, stats   # AH before another port: taken whole, rejected by the filter


def test_a_sniffing_handle_copies_each_packet_once_through_several_native_rules(netns):
    """Each alternative of a native disjunction is a jump of its own: no packet may take two."""
    from divertgui.engine.address import Flag
    text = f"udp.DstPort == {PORT} or udp.DstPort == {OTHER_PORT} or tcp.DstPort == {PORT}"
    assert len(kernel_test(text, 6, "O").match.native) == 5
    with netns.entered():
        servers = [udp_socket("::1", PORT), udp_socket("::1", OTHER_PORT)]
        with Divert(text, flags=Flag.SNIFF, backend=NfqueueBackend(kernel_prefilter=kernel_test)) as handle:
            client = udp_socket("::1")
            for i in range(5):
                client.sendto(b"one %d" % i, ("::1", PORT))
                client.sendto(b"two %d" % i, ("::1", OTHER_PORT))
                client.sendto(b"none %d" % i, ("::1", PORT + 2))
            arrived = [receive_all(server, 0.5) for server in servers]
            copies = []
            wait_until(lambda: copies.extend(handle.recv_batch(16, 0.1)) or len(copies) >= 10, 3)
            copies.extend(handle.recv_batch(16, 0.3))
    assert [len(got) for got in arrived] == [5, 5]
    assert sorted(packet.payload for packet in copies) == sorted(
        [b"one %d" % i for i in range(5)] + [b"two %d" % i for i in range(5)])


def test_without_the_prefilter_the_same_traffic_is_sifted_in_user_space(veth):
    """The control: the rejected counter does count when the kernel tests nothing."""
    with veth.b.entered():
        server = udp_socket(veth.b_v4, PORT)
        other = udp_socket(veth.b_v4, OTHER_PORT)
        with Divert(f"udp.DstPort == {PORT}", backend=NfqueueBackend()) as handle, Passthru(handle) as passthru:
            with veth.a.entered():
                client = udp_socket(veth.a_v4)
                for i in range(5):
                    client.sendto(b"match %d" % i, (veth.b_v4, PORT))
                    client.sendto(b"other %d" % i, (veth.b_v4, OTHER_PORT))
            receive_all(server, 0.5)
            receive_all(other, 0.3)
            passthru.stop()
            stats = handle.stats()
    assert stats["diverted"] == 5
    assert stats["rejected"] >= 5


KERNEL_FILTERS = [
    "tcp.DstPort == 80 or tcp.SrcPort == 80", "udp and udp.DstPort >= 1000", "icmp.Type == 8 or icmpv6.Type == 128",
    "tcp.Syn and not tcp.Ack", "localPort == 53 or remotePort == 443", "protocol == 17", "fragment",
    "ip.TTL < 64 or ipv6.HopLimit < 64", "length > 60", "tcp.HdrLength > 5", "ipv6.FlowLabel > 5000",
    "impostor", "(tcp ? tcp.DstPort < 1024 : udp.SrcPort > 100)",
]
PROBE_MARK = 0x7
PROBE_TABLE = "dgprobe"


def _loopback_probe(raw: bytes) -> bytes:
    """`raw` readdressed to loopback, with what a raw socket would rewrite already in place."""
    data = bytearray(raw)
    if data[0] >> 4 == 4:
        data[12:16], data[16:20] = bytes([127, 0, 0, 1]), bytes([127, 0, 0, 2])
        if data[4:6] == b"\x00\x00":
            data[4:6] = b"\x12\x34"  # the kernel picks an id for 0
    else:
        data[8:24] = data[24:40] = bytes(15) + b"\x01"
    return bytes(data)


# Filters the kernel tests with nf_tables' own expressions: exactly for IPv4 and for IP header
# fields; IPv6 transport tests take the packets behind AH or a mobility header whole.
NATIVE_FILTERS = [
    "udp.DstPort < 30000", "udp and udp.SrcPort >= 20000 and udp.DstPort != 53", "tcp.DstPort > 1024",
    "tcp and tcp.SrcPort <= 40000", "not tcp.DstPort == 80", "udp", "tcp", "icmp", "icmpv6.Type == 128",
    "tcp.DstPort == 80 or udp.DstPort == 53 or udp.DstPort == 443", "ip.DstAddr == 127.0.0.2",
    "ip.TTL < 64 and ip.SrcAddr >= 127.0.0.1", "ipv6.SrcAddr == ::1 and ipv6.HopLimit >= 64",
    "ipv6.DstAddr == ::1 or ipv6.DstAddr == ::2", "tcp.Syn and not tcp.Ack", "ip.DF and ip.HdrLength == 5",
    "ipv6.TrafficClass > 3",
]


def test_the_kernel_runs_the_programs_as_the_unit_tests_interpreter_does(netns):
    """The unit tests prove the superset property with a Python interpreter of
    classic BPF and a model of nf_tables' native rules (tests/nft_model.py);
    here the same rules run in the kernel on the same bytes."""
    _require_xt_bpf()
    import random
    from divertgui.engine.filter import compile_filter, parse_filter
    from divertgui.engine.filter.kernel import translate
    from tests import nft_model, packet_gen
    from tests.unit.test_filter_kernel import EXTENSION_CASES, _kernel_shaped, ipv6_udp, run_bpf

    # Per version, each filter tested: its text, how many rules it has, and what they should say of a packet.
    tested = {4: [], 6: []}
    with netns.entered(), nftables.NftablesSocket() as sock:
        for version, family in nftables.FAMILIES.items():
            # A table of the test's own: every probe is counted, then each filter's rules.
            changes = [nftables.new_table(family, PROBE_TABLE),
                       nftables.new_chain(family, PROBE_TABLE, "output", (netlink.NF_INET_LOCAL_OUT, -150, "route")),
                       nftables.new_rule(family, PROBE_TABLE, "output",
                                         mark_masked(0xFFFFFFFF, PROBE_MARK, equal=False)
                                         + [nftables.verdict(nftables.NFT_RETURN)]),
                       nftables.new_rule(family, PROBE_TABLE, "output", [nftables.counter()])]
            for text in KERNEL_FILTERS + NATIVE_FILTERS:
                if translate(parse_filter(text), version).program is None:
                    continue
                match = kernel_test(text, version, use_bpf=True).match
                assert match.native is not None or text not in NATIVE_FILTERS, (text, version)
                if match.native is not None:
                    decide = lambda raw, address, native=match.native: nft_model.accepts(native, raw)  # noqa: E731
                else:
                    decide = lambda raw, address, p=match.program: run_bpf(p, raw, PROBE_MARK) != 0  # noqa: E731
                rules = packet_matches(match)
                tested[version].append((text, len(rules), decide, compile_filter(text)))
                changes += [nftables.new_rule(family, PROBE_TABLE, "output", tests + [nftables.counter()])
                            for tests, _needs in rules]
            sock.apply(changes)

    def counters(version: int) -> list[int]:
        with nftables.NftablesSocket() as sock:
            return [rule.packets for rule in sock.rules(nftables.FAMILIES[version], PROBE_TABLE)
                    if rule.packets is not None]

    rng, address_rng = random.Random(31), random.Random(32)
    crafted = [ipv6_udp(chain, port, offset) for chain, offset, port, _wanted, _rule in EXTENSION_CASES]
    compared = accepted = handmade_compared = 0
    with netns.entered():
        sockets = {4: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW),
                   6: socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)}
        for sock in sockets.values():
            sock.setsockopt(socket.SOL_SOCKET, 36, PROBE_MARK)  # SO_MARK
        tries = 0
        while compared < 80 + len(crafted) and tries < 2000:
            tries += 1
            handmade = bool(crafted)
            if handmade:
                raw = crafted.pop()
            else:
                raw = packet_gen.ipv4_packet(rng) if compared % 2 else packet_gen.ipv6_packet(rng)
                if not _kernel_shaped(raw):
                    continue
            raw = _loopback_probe(raw)
            version = raw[0] >> 4
            before = counters(version)
            try:
                sockets[version].sendto(raw, ("127.0.0.2", 0) if version == 4 else ("::1", 0, 0, 0))
            except OSError:
                continue  # refused by the stack before any hook: nothing to compare
            after = counters(version)
            if after[0] != before[0] + 1:
                continue  # the packet did not reach OUTPUT exactly once
            hits = [a - b for a, b in zip(after[1:], before[1:])]
            address = packet_gen.address_for(address_rng, raw)
            for text, count, decide, compiled in tested[version]:
                in_kernel, hits = sum(hits[:count]), hits[count:]
                assert in_kernel == int(decide(raw, address)), (raw.hex(), text)
                if text in NATIVE_FILTERS and compiled.match(raw, address):
                    assert in_kernel, (raw.hex(), text)   # the superset property, in the kernel itself
                accepted += in_kernel
            compared += 1
            handmade_compared += handmade
    assert compared >= 40 and accepted > 20, (compared, accepted)
    assert handmade_compared == len(EXTENSION_CASES)
