"""The display dissector: protocol names, Wireshark-like summaries, and a
field tree whose byte ranges are right (checked against tshark) and which
never raises on malformed bytes."""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess

import dpkt
import pytest

from divertgui.engine.dissect import Node, decode_tree, protocol_name, summary
from divertgui.engine.packet import FragmentHeader, Packet
from divertgui.engine.packet import field_label
from tests import packet_gen
from tests.unit.test_packet import icmp, ipv4, ipv6, tcp, udp


def dns_query(ident=0x1A2B, name="example.com", qtype=dpkt.dns.DNS_A) -> bytes:
    message = dpkt.dns.DNS(id=ident, qd=[dpkt.dns.DNS.Q(name=name, type=qtype)])
    return bytes(message)


def dns_response() -> bytes:
    answer = dpkt.dns.DNS.RR(name="example.com", type=dpkt.dns.DNS_A, ttl=60, rdata=bytes([93, 184, 216, 34]))
    message = dpkt.dns.DNS(id=0x1A2B, qr=dpkt.dns.DNS_R, qd=[dpkt.dns.DNS.Q(name="example.com")], an=[answer])
    return bytes(message)


def syn_packet() -> bytes:
    options = bytes([2, 4, 5, 0xB4, 4, 2, 1, 3, 3, 7, 1, 1])
    segment = struct.pack("!HHIIBBHHH", 51234, 80, 0, 0, (5 + len(options) // 4) << 4, 0x02, 64240, 0, 0) + options
    return ipv4(6, segment)


def client_hello() -> bytes:
    return bytes([22, 3, 1, 0, 4, 1, 0, 0, 0])


def walk(nodes, depth=0):
    for node in nodes:
        yield node, depth
        yield from walk(node.children, depth + 1)


def find(nodes, label_start: str) -> Node:
    for node, _ in walk(nodes):
        if node.label.startswith(label_start):
            return node
    raise AssertionError(f"no node {label_start!r} in {[n.label for n, _ in walk(nodes)]}")


@pytest.mark.parametrize("raw, name", [
    (ipv4(6, tcp()), "TCP"),
    (ipv4(17, struct.pack("!HHHH", 5000, 6000, 9, 0) + b"x"), "UDP"),
    (ipv4(17, udp(b"x")), "DNS"),       # by its port, as Wireshark does
    (ipv4(17, udp(dns_query())), "DNS"),
    (ipv6(6, tcp(b"GET / HTTP/1.1\r\n\r\n")), "HTTP"),
    (ipv4(6, tcp(b"HTTP/1.1 200 OK\r\n\r\n")), "HTTP"),
    (ipv4(6, struct.pack("!HHIIBBHHH", 50000, 443, 1, 1, 0x50, 0x18, 1, 0, 0) + client_hello()), "TLS"),
    (ipv6(17, struct.pack("!HHHH", 50000, 443, 20, 0) + bytes([0xC3, 0, 0, 0, 1]) + bytes(7)), "QUIC"),
    (ipv4(1, icmp()), "ICMP"),
    (ipv6(58, icmp()), "ICMPv6"),
    (ipv4(47, b"gre"), "GRE"),
    (b"\x45\x00", "IPv4"),
    (b"", "Unknown"),
])
def test_protocol_name(raw, name):
    assert protocol_name(raw) == name


def test_summaries_read_like_wiresharks():
    assert summary(syn_packet(), None) == "51234 → 80 [SYN] Seq=0 Win=64240 Len=0 MSS=1460 SACK_PERM WS=128"
    assert summary(ipv4(17, udp(dns_query()))) == "Standard query 0x1a2b A example.com"
    assert summary(ipv4(17, udp(dns_response()))) == \
        "Standard query response 0x1a2b A example.com A 93.184.216.34"
    assert summary(ipv6(6, tcp(b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n"))) == "GET /index.html HTTP/1.1"
    assert summary(ipv4(1, icmp())) == "Echo (ping) request id=0x0007, seq=1"
    assert summary(ipv4(17, udp(b"abc"))) == "5000 → 53 Len=3"
    ack = ipv4(6, tcp(b"12345", flags=0x18))
    assert summary(ack) == "40000 → 80 [PSH, ACK] Seq=1000 Ack=2000 Win=8192 Len=5"
    port_unreachable = ipv4(1, struct.pack("!BBHI", 3, 3, 0, 0))
    assert summary(port_unreachable) == "Destination unreachable (Port unreachable)"
    assert summary(ipv4(6, struct.pack("!HHIIBBHHH", 5, 443, 1, 1, 0x50, 0x18, 1, 0, 0) + client_hello())) == \
        "Client Hello"
    fragment = bytearray(ipv4(17, udp(b"x")))
    fragment[6:8] = b"\x00\x03"
    assert summary(bytes(fragment)) == "Fragmented IP protocol (proto=UDP 17, off=24, ID=1234)"


def test_summaries_explain_malformed_packets():
    assert "shorter than the 20-byte header" in summary(b"\x45\x00\x00")
    assert "header length 60 > 20" in summary(b"\x4f" + bytes(19))
    assert "Not an IP packet" in summary(b"\x12" * 30)
    assert summary(ipv4(6, b"short")).startswith("Malformed TCP header")


def test_tree_covers_every_ipv4_and_tcp_field_with_its_bytes():
    raw = syn_packet()
    tree = decode_tree(raw)
    ttl = find(tree, "Time to Live")
    assert (ttl.value, ttl.offset, ttl.length) == ("64", 8, 1)
    source = find(tree, "Source Address")
    assert (source.value, source.offset, source.length) == ("10.0.0.1", 12, 4)
    flags = find(find(tree, "Transmission Control Protocol").children, "Flags")
    assert flags.offset == 33 and "SYN" in flags.value
    assert find(flags.children, "Syn").value == "Set" and find(flags.children, "Fin").value == "Not set"
    options = find(tree, "Options")
    assert [n.label for n in options.children] == ["MSS", "SACK permitted", "NOP", "Window scale", "NOP", "NOP"]
    mss = options.children[0]
    assert (mss.value, mss.offset, mss.length) == ("1460", 40, 4)
    assert raw[mss.offset:mss.offset + mss.length] == bytes([2, 4, 5, 0xB4])


def test_tree_has_ipv4_options_and_ipv6_extension_headers():
    tree = decode_tree(ipv4(17, udp(b"x"), options=bytes([148, 4, 0, 0])))
    alert = find(tree, "Router Alert")
    assert (alert.offset, alert.length) == (20, 4)

    hop_by_hop = bytes([44, 0, 5, 2, 0, 0, 1, 0])
    fragment = bytes([17, 0, 0, 1, 0, 0, 0, 9])
    raw = ipv6(0, hop_by_hop + fragment + udp(dns_query()))
    tree = decode_tree(raw)
    assert [n.label for n in tree][:3] == ["Internet Protocol Version 6, Src: 2001:db8::1, Dst: fe80::abcd:1",
                                           "IPv6 Hop-by-Hop", "IPv6 Fragment"]
    assert find(tree, "IPv6 Fragment").offset == 48
    assert find(find(tree, "IPv6 Fragment").children, "Identification").value == "0x00000009"
    assert find(find(tree, "IPv6 Fragment").children, "More Fragments").value == "Set"
    router_alert = find(find(tree, "IPv6 Hop-by-Hop").children, "Router Alert")
    assert (router_alert.offset, router_alert.length) == (42, 4)
    dns = find(tree, "Domain Name System")
    assert dns.value == "query" and find(dns.children, "Transaction ID").value == "0x1a2b"
    assert find(dns.children, "example.com").value == "A"


def _header_views(raw: bytes) -> list:
    packet = Packet(raw)
    views = [packet.ipv4] if packet.ipv4 is not None else [packet.ipv6, *packet.ipv6.extension_headers]
    return views + [view for view in (packet.tcp, packet.udp, packet.icmp, packet.icmpv6) if view is not None]


def _editor_labelled_fields(raw: bytes) -> set:
    return {(field_label(attr, name), view.offset + attr.offset, attr.size)
            for view in _header_views(raw) for name, attr in view.field_descriptors().items()
            if not (isinstance(view, FragmentHeader) and name == "hdr_ext_len")}   # shares its byte with reserved


ROUTING = bytes([51, 0, 0, 0, 0, 0, 0, 0])
AUTHENTICATION = bytes([17, 1, 0, 0]) + (0x1001).to_bytes(4, "big") + (7).to_bytes(4, "big")


@pytest.mark.parametrize("raw", [
    syn_packet(), ipv4(17, udp(b"x"), options=bytes([148, 4, 0, 0])), ipv4(1, icmp()), ipv6(58, icmp()),
    ipv6(0, bytes([44, 0, 5, 2, 0, 0, 1, 0]) + bytes([43, 0, 0, 1, 0, 0, 0, 9]) + ROUTING + AUTHENTICATION
         + udp(b"x")),
    ipv6(6, tcp(b"GET / HTTP/1.1\r\n\r\n", options=bytes([1, 1, 4, 2]), flags=0xFF)),
], ids=["ipv4-tcp-syn", "ipv4-options-udp", "ipv4-icmp", "ipv6-icmpv6", "ipv6-extensions", "ipv6-tcp-all-flags"])
def test_every_header_field_node_is_labelled_as_in_the_packet_editor(raw):
    expected = _editor_labelled_fields(raw)
    field_spans = {(offset, length) for _, offset, length in expected}
    shown = {(node.label, node.offset, node.length) for node, _ in walk(decode_tree(raw))}
    assert expected <= shown, sorted(expected - shown)
    # Wherever a field's span holds a node with a field's label, it is that field's label and no other.
    field_labels = {label for label, _, _ in expected}
    stray = {node for node in shown if node[0] in field_labels and node[1:] in field_spans} - expected
    assert not stray, sorted(stray)


def test_tree_uses_wiresharks_names_for_fields_whose_names_differ_by_header():
    ipv4_tree = decode_tree(syn_packet())
    assert (find(ipv4_tree, "Total Length").offset, find(ipv4_tree, "Header Checksum").offset) == (2, 10)
    ipv6_tree = decode_tree(ipv6(17, udp(b"x")))
    assert find(ipv6_tree, "Payload Length").value == "9"
    assert find(find(ipv6_tree, "User Datagram Protocol").children, "Length").value == "9"


def test_tree_shows_http_lines_at_their_offsets():
    payload = b"GET /a HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\nbody"
    raw = ipv4(6, tcp(payload))
    http = find(decode_tree(raw), "Hypertext Transfer Protocol")
    host = find(http.children, "Host")
    assert host.value == "example.com" and raw[host.offset:host.offset + host.length] == b"Host: example.com"
    assert find(http.children, "Body").length == 4


def test_tree_marks_malformed_parts():
    assert decode_tree(b"\x45\x00")[0].label == "Malformed"
    truncated_tcp = ipv4(6, tcp())[:30]
    assert any(n.label == "Malformed" for n in decode_tree(truncated_tcp))
    lying = bytearray(ipv4(6, tcp(b"abcd")))
    lying[32] = 0xF0     # TCP header length 60 with 24 bytes present
    nodes = decode_tree(bytes(lying))
    assert any(n.label == "Malformed" and "60" in n.value for n in nodes)
    extended = bytearray(ipv4(17, udp(b"x")))
    extended[2:4] = b"\x01\x00"
    assert any(n.label == "Malformed" and "256" in n.value for n in decode_tree(bytes(extended)))
    trailing = ipv4(17, udp(b"x")) + b"\0\0"
    assert decode_tree(trailing)[-1].label == "Trailing bytes"


def _check_tree(raw: bytes, nodes) -> None:
    for node, _ in walk(nodes):
        assert isinstance(node.label, str) and isinstance(node.value, str)
        assert 0 <= node.offset and 0 <= node.length and node.offset + node.length <= max(len(raw), 0), \
            f"{node} beyond {len(raw)} bytes: {raw.hex()}"


def test_never_raises_on_random_or_mangled_bytes():
    rng = random.Random(4242)
    for index in range(15000):
        if index % 2:
            raw = packet_gen.packet(rng)
        else:
            raw = bytearray(rng.randbytes(rng.randrange(0, 120)))
            if raw and rng.random() < 0.8:
                raw[0] = rng.choice((0x45, 0x46, 0x48, 0x60))
            raw = bytes(raw)
        assert isinstance(protocol_name(raw), str)
        text = summary(raw, None)
        assert isinstance(text, str) and not text.startswith("Malformed packet ("), (text, raw.hex())
        nodes = decode_tree(raw)
        _check_tree(raw, nodes)
        assert not any(n.label == "Malformed" and "Error" in n.value for n, _ in walk(nodes)), raw.hex()


def test_application_payloads_with_garbage_never_raise():
    rng = random.Random(5)
    for _ in range(1500):
        body = rng.choice((dns_query(), dns_response(), b"GET / HTTP/1.1\r\n", client_hello(), b"\xc3\0\0\0\1"))
        body = bytearray(body[:rng.randrange(len(body) + 1)])
        for _ in range(rng.randrange(3)):
            if body:
                body[rng.randrange(len(body))] = rng.randrange(256)
        for raw in (ipv4(17, udp(bytes(body))), ipv6(6, tcp(bytes(body))),
                    ipv4(17, struct.pack("!HHHH", 1, 443, 8 + len(body), 0) + bytes(body))):
            summary(raw)
            _check_tree(raw, decode_tree(raw))


# Against tshark: the values and byte positions of fields it also decodes.

TSHARK_FIELDS = {
    "ip.ttl": ("Internet Protocol Version 4", "Time to Live", 8),
    "ip.id": ("Internet Protocol Version 4", "Identification", 4),
    "ip.src": ("Internet Protocol Version 4", "Source Address", 12),
    "ipv6.hlim": ("Internet Protocol Version 6", "Hop Limit", 7),
    "ipv6.dst": ("Internet Protocol Version 6", "Destination Address", 24),
    "tcp.srcport": ("Transmission Control Protocol", "Source Port", None),
    "tcp.window_size_value": ("Transmission Control Protocol", "Window", None),
    "udp.dstport": ("User Datagram Protocol", "Destination Port", None),
    "udp.length": ("User Datagram Protocol", "Length", None),
}


def _tshark() -> str:
    path = shutil.which("tshark")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tshark is not installed (Debian package tshark)")
        pytest.skip("tshark is not installed (Debian package tshark)")
    return path


def _normalise(field: str, text: str) -> str:
    if field == "ip.id":
        return str(int(text, 16))
    return text


def test_field_values_and_offsets_agree_with_tshark(tmp_path):
    tshark = _tshark()
    rng = random.Random(31337)
    packets = []
    while len(packets) < 300:
        raw = packet_gen.ipv4_packet(rng) if rng.random() < 0.5 else packet_gen.ipv6_packet(rng)
        if protocol_name(raw) in ("TCP", "UDP") or rng.random() < 0.2:
            packets.append(raw)
    capture = tmp_path / "generated.pcap"
    with open(capture, "wb") as handle:
        writer = dpkt.pcap.Writer(handle, linktype=101)   # LINKTYPE_RAW: packets start at the IP header
        for index, raw in enumerate(packets):
            writer.writepkt(raw, ts=index)
    names = list(TSHARK_FIELDS)
    command = [tshark, "-r", str(capture), "-n", "-T", "fields", "-E", "occurrence=f", "-E", "separator=\t"]
    for name in names:
        command += ["-e", name]
    lines = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    assert len(lines) == len(packets)
    compared = 0
    for raw, line in zip(packets, lines):
        values = dict(zip(names, line.split("\t")))
        tree = decode_tree(raw)
        for field, (layer, label, ip_offset) in TSHARK_FIELDS.items():
            theirs = values.get(field, "")
            layers = [n for n in tree if n.label.startswith(layer)]
            if not theirs or not layers:
                continue
            ours = find(layers[0].children, label)
            value = ours.value.split(" ")[0]
            if field == "ip.id":
                value = str(int(value, 16))
            assert value == _normalise(field, theirs), f"{field}: {ours} vs {theirs} in {raw.hex()}"
            if ip_offset is not None:
                assert ours.offset == ip_offset
            compared += 1
    assert compared > 1000


def test_flow_label_shows_the_label_and_what_a_filter_compares():
    raw = struct.pack("!IHBB16s16s", 6 << 28 | 0x12 << 20 | 0xABCDE, 0, 59, 64, bytes(16), bytes(16))
    ip6 = decode_tree(raw)[0]
    label = next(node for node in ip6.children if node.label == "Flow Label")
    assert label.value == "0xabcde"
    (as_filtered,) = label.children
    # WinDivert's ipv6.FlowLabel: ntohl((FlowLabel0 << 16) | FlowLabel1) over its header struct.
    assert "ipv6.FlowLabel" in as_filtered.label and as_filtered.value == f"0x{0xBCDE0A00:08x} ({0xBCDE0A00})"
    assert Packet(raw).ipv6.flow_label == 0xABCDE
