"""Capture files: our pcapng round-trips, other tools read it, and we read what they write."""

from __future__ import annotations

import decimal
import io
import os
import random
import shutil
import struct
import subprocess
import sys

import dpkt
import pytest
from dpkt import pcapng as ng

from divertgui.engine.address import Address
from divertgui.engine.pcapng import (
    CaptureFileError,
    CaptureReader,
    PcapngWriter,
    iter_capture,
    read_capture,
    write_capture,
)

BASE_NS = 1_700_000_000_000_000_000


def ipv4_udp(seq: int, payload_len: int) -> bytes:
    udp = dpkt.udp.UDP(sport=40000 + seq % 1000, dport=53, data=bytes(range(payload_len % 256)) * (payload_len // 256 + 1))
    udp.data = udp.data[:payload_len]
    udp.ulen = 8 + payload_len
    ip = dpkt.ip.IP(src=bytes([10, 0, 0, 1 + seq % 200]), dst=bytes([10, 0, 1, 1]), p=dpkt.ip.IP_PROTO_UDP, data=udp)
    ip.len = len(bytes(ip))
    return bytes(ip)


def ipv6_tcp(seq: int, payload_len: int) -> bytes:
    tcp = dpkt.tcp.TCP(sport=50000, dport=443, seq=seq, flags=dpkt.tcp.TH_ACK, data=b"x" * payload_len)
    ip6 = dpkt.ip6.IP6(src=bytes(15) + bytes([1]), dst=bytes(15) + bytes([2]), nxt=dpkt.ip.IP_PROTO_TCP, hlim=64, data=tcp)
    ip6.plen = len(bytes(tcp))
    return bytes(ip6)


def sample_packets(count: int, seed: int = 7) -> list[tuple[bytes, Address, int, str | None]]:
    """Mixed IPv4/IPv6 packets of every length modulo 4 (so EPB padding is exercised), both directions."""
    rng = random.Random(seed)
    packets = []
    for i in range(count):
        v6 = rng.random() < 0.4
        raw = ipv6_tcp(i, rng.randrange(0, 70)) if v6 else ipv4_udp(i, rng.randrange(0, 70))
        loopback = rng.random() < 0.2
        address = Address(outbound=rng.random() < 0.5, loopback=loopback, ipv6=v6,
                          if_idx=1 if loopback else rng.choice((2, 3, 7)))
        comment = rng.choice((None, None, "modified", "dropped by rule 2", "é ✓"))
        packets.append((raw, address, BASE_NS + i * 1_234_567 + rng.randrange(1000), comment))
    return packets


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian package: tshark or wireshark-common)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def tshark_fields(path, *fields: str) -> list[list[str]]:
    args = [require_tool("tshark"), "-r", os.fspath(path), "-T", "fields", "-E", "separator=/t"]
    for field in fields:
        args += ["-e", field]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [line.split("\t") for line in result.stdout.splitlines()]


def epoch_ns(text: str) -> int:
    return int(decimal.Decimal(text) * 1_000_000_000)


# ---------------------------------------------------------------- our own files


def test_round_trip_keeps_bytes_time_direction_interface_and_comment(tmp_path):
    packets = sample_packets(300)
    path = tmp_path / "round.pcapng"
    assert write_capture(path, packets) == 300
    records = read_capture(path)
    assert len(records) == len(packets)
    for (raw, address, wall_ns, comment), record in zip(packets, records):
        assert record.raw == raw
        assert record.timestamp_ns == wall_ns
        assert record.outbound is address.outbound
        assert record.loopback is address.loopback
        assert record.if_idx == address.if_idx
        assert record.comment == comment
        assert record.wire_len == len(raw)


def test_one_interface_block_per_interface_seen(tmp_path):
    path = tmp_path / "ifaces.pcapng"
    write_capture(path, sample_packets(200))
    reader = CaptureReader(path)
    list(reader)
    seen = {(address.if_idx, address.loopback) for _, address, _, _ in sample_packets(200)}
    assert len(reader.interfaces) == len(seen)
    assert all(interface.linktype == 101 and interface.ts_units_per_s == 10**9 for interface in reader.interfaces)


def test_interface_names_can_be_chosen_by_the_writer(tmp_path):
    packets = sample_packets(60)
    names = {1: "lo", 2: "lan", 3: "wan", 7: "vpn"}
    path = tmp_path / "named.pcapng"
    write_capture(path, packets, interface_name=lambda if_idx, loopback: names[if_idx])
    reader = CaptureReader(path)
    records = list(reader)
    assert [reader.interfaces[r.interface].name for r in records] == [names[a.if_idx] for _, a, _, _ in packets]
    shown = tshark_fields(path, "frame.interface_name")
    assert [row[0] for row in shown] == [names[a.if_idx] for _, a, _, _ in packets]
    # The names are the file's only host-dependent part: the same packets give the same bytes.
    again = tmp_path / "again.pcapng"
    write_capture(again, packets, interface_name=lambda if_idx, loopback: names[if_idx])
    assert again.read_bytes() == path.read_bytes()


def test_an_interface_name_that_is_not_a_name_is_refused(tmp_path):
    with PcapngWriter(io.BytesIO(), interface_name=lambda if_idx, loopback: "") as writer:
        with pytest.raises(ValueError, match=r"interface_name\(4, False\) gave ''"):
            writer.write(ipv4_udp(1, 4), Address(if_idx=4), BASE_NS)


def test_packets_that_are_not_ip_still_round_trip(tmp_path):
    # An edited packet can be anything; saving it must not lose it.
    odd = [(b"", Address(), BASE_NS, None), (b"\x00\x01\x02", Address(outbound=True), BASE_NS + 1, "garbage")]
    path = tmp_path / "odd.pcapng"
    write_capture(path, odd)
    assert [(r.raw, r.outbound) for r in read_capture(path)] == [(b"", False), (b"\x00\x01\x02", True)]


def test_enhanced_packet_blocks_match_dpkt(tmp_path):
    raw = ipv4_udp(1, 5)
    buffer = io.BytesIO()
    with PcapngWriter(buffer) as writer:
        writer.write(raw, Address(outbound=True, if_idx=4), BASE_NS + 99, comment="held")
    data = buffer.getvalue()
    shb_len = struct.unpack_from("<I", data, 4)[0]
    idb_len = struct.unpack_from("<I", data, shb_len + 4)[0]
    shb = ng.SectionHeaderBlockLE(data[:shb_len])
    idb = ng.InterfaceDescriptionBlockLE(data[shb_len:shb_len + idb_len])
    epb_bytes = data[shb_len + idb_len:]
    assert shb.bom == ng.BYTE_ORDER_MAGIC
    epb = ng.EnhancedPacketBlockLE(epb_bytes)
    assert epb.pkt_data == raw
    assert (epb.ts_high << 32 | epb.ts_low) == BASE_NS + 99
    options = {opt.code: opt.data for opt in epb.opts}
    assert struct.unpack("<I", options[2])[0] == 2
    assert options[1] == b"held"
    assert bytes(epb) == epb_bytes
    assert idb.linktype == 101


def test_writing_streams_batches_to_disk(tmp_path):
    path = tmp_path / "stream.pcapng"
    packets = sample_packets(50)
    with PcapngWriter(path) as writer:
        writer.write_batch(packets[:20])
        # A reader sees the first batch while the writer is still open.
        assert len(read_capture(path)) == 20
        writer.write_batch(packets[20:])
        assert len(read_capture(path)) == 50
        assert writer.count == 50


def test_tshark_reads_our_file_with_the_same_packets_and_directions(tmp_path):
    packets = sample_packets(120, seed=3)
    path = tmp_path / "ours.pcapng"
    write_capture(path, packets)
    rows = tshark_fields(path, "frame.number", "frame.packet_flags_direction", "frame.comment",
                         "frame.time_epoch", "frame.len", "ip.src", "ipv6.src")
    assert len(rows) == len(packets)
    for (raw, address, wall_ns, comment), row in zip(packets, rows):
        number, direction, tshark_comment, epoch, length, ip_src, ipv6_src = row
        assert int(direction, 16) == (2 if address.outbound else 1)
        assert tshark_comment == (comment or "")
        assert epoch_ns(epoch) == wall_ns
        assert int(length) == len(raw)
        assert (ipv6_src != "") == address.ipv6 and (ip_src != "") == (not address.ipv6)


# ---------------------------------------------------------------- files other tools write


def hexdump(frame: bytes, direction: str | None = None) -> str:
    lines = [direction] if direction else []
    lines += [f"{i:06x}  " + " ".join(f"{b:02x}" for b in frame[i:i + 16]) for i in range(0, len(frame), 16)]
    return "\n".join(lines) + "\n"


def text2pcap(tmp_path, frames: list[bytes], linktype: int, name: str, directions=None, file_type="pcapng"):
    source = tmp_path / f"{name}.txt"
    directions = directions or [None] * len(frames)
    source.write_text("".join(hexdump(frame, d) for frame, d in zip(frames, directions)))
    target = tmp_path / f"{name}.{file_type}"
    args = [require_tool("text2pcap"), "-q", "-l", str(linktype), "-F", file_type]
    if directions[0]:
        args.append("-D")
    subprocess.run(args + [str(source), str(target)], check=True, capture_output=True, timeout=60)
    return target


def ethernet(ip: bytes, vlans: tuple[int, ...] = (), zero_macs: bool = False) -> bytes:
    macs = bytes(12) if zero_macs else bytes.fromhex("020000000002" "020000000001")
    tags = b"".join(struct.pack(">HH", tpid, vid) for tpid, vid in vlans)
    ethertype = 0x86DD if ip[0] >> 4 == 6 else 0x0800
    return macs + tags + struct.pack(">H", ethertype) + ip


def test_text2pcap_ethernet_with_vlan_tags_and_arp(tmp_path):
    ips = [ipv4_udp(1, 10), ipv6_tcp(2, 3), ipv4_udp(3, 0), ipv4_udp(4, 7)]
    arp = bytes.fromhex("ffffffffffff020000000001" "0806") + bytes(28)
    frames = [ethernet(ips[0]), ethernet(ips[1], vlans=((0x8100, 5),)), arp,
              ethernet(ips[2], vlans=((0x88A8, 100), (0x8100, 7))), ethernet(ips[3], zero_macs=True)]
    path = text2pcap(tmp_path, frames, 1, "ether")
    reader = CaptureReader(path)
    records = list(reader)
    assert [r.raw for r in records] == ips
    assert reader.skipped == {"Ethernet type 0x0806 (not IP)": 1}
    assert [r.loopback for r in records] == [None, None, None, True]
    assert len(tshark_fields(path, "frame.number")) == len(frames)


def test_text2pcap_directions_are_read_from_epb_flags(tmp_path):
    ips = [ipv4_udp(i, i) for i in range(6)]
    directions = ["I", "O", "O", "I", "O", "I"]
    path = text2pcap(tmp_path, ips, 101, "dirs", directions)
    records = read_capture(path)
    assert [r.outbound for r in records] == [d == "O" for d in directions]
    assert [r.raw for r in records] == ips


@pytest.mark.parametrize("linktype", [101, 228, 229])
def test_raw_ip_link_types(tmp_path, linktype):
    ip = ipv6_tcp(1, 4) if linktype == 229 else ipv4_udp(1, 4)
    path = text2pcap(tmp_path, [ip, ip], linktype, f"raw{linktype}", file_type="pcap")
    assert [r.raw for r in read_capture(path)] == [ip, ip]


def sll(ip: bytes, packet_type: int, arphrd: int = 1) -> bytes:
    ethertype = 0x86DD if ip[0] >> 4 == 6 else 0x0800
    return struct.pack(">HHH8sH", packet_type, arphrd, 6, bytes(8), ethertype) + ip


def sll2(ip: bytes, packet_type: int, if_idx: int, arphrd: int = 1) -> bytes:
    ethertype = 0x86DD if ip[0] >> 4 == 6 else 0x0800
    return struct.pack(">HHIHBB8s", ethertype, 0, if_idx, arphrd, packet_type, 6, bytes(8)) + ip


def test_linux_cooked_sll_gives_direction_and_loopback(tmp_path):
    ips = [ipv4_udp(1, 1), ipv6_tcp(2, 2), ipv4_udp(3, 3)]
    frames = [sll(ips[0], 0), sll(ips[1], 4), sll(ips[2], 4, arphrd=772)]
    path = text2pcap(tmp_path, frames, 113, "sll")
    records = read_capture(path)
    assert [r.raw for r in records] == ips
    assert [r.outbound for r in records] == [False, True, True]
    assert [r.loopback for r in records] == [False, False, True]
    assert [row[0] for row in tshark_fields(path, "sll.pkttype")] == ["0", "4", "4"]


def test_linux_cooked_sll2_gives_direction_and_interface_index(tmp_path):
    ips = [ipv4_udp(1, 1), ipv6_tcp(2, 2)]
    frames = [sll2(ips[0], 0, if_idx=3), sll2(ips[1], 4, if_idx=9, arphrd=772)]
    path = text2pcap(tmp_path, frames, 276, "sll2")
    records = read_capture(path)
    assert [(r.raw, r.outbound, r.if_idx, r.loopback) for r in records] == [
        (ips[0], False, 3, False), (ips[1], True, 9, True)]


def test_bsd_loopback_null_in_either_byte_order(tmp_path):
    ips = [ipv4_udp(1, 1), ipv6_tcp(2, 2), ipv6_tcp(3, 3)]
    frames = [struct.pack("<I", 2) + ips[0], struct.pack("<I", 30) + ips[1], struct.pack(">I", 24) + ips[2]]
    path = text2pcap(tmp_path, frames, 0, "null", file_type="pcap")
    records = read_capture(path)
    assert [r.raw for r in records] == ips
    assert all(r.loopback for r in records)


@pytest.mark.parametrize("file_type", ["pcap", "nsecpcap", "pcapng"])
def test_editcap_conversions_keep_packets_and_times(tmp_path, file_type):
    ours = tmp_path / "ours.pcapng"
    packets = sample_packets(40, seed=11)
    write_capture(ours, packets)
    converted = tmp_path / f"converted.{file_type}"
    subprocess.run([require_tool("editcap"), "-F", file_type, str(ours), str(converted)],
                   check=True, capture_output=True, timeout=60)
    records = read_capture(converted)
    assert [r.raw for r in records] == [raw for raw, _, _, _ in packets]
    # Classic pcap keeps microseconds at best; nanosecond pcap and pcapng keep everything.
    resolution = 1000 if file_type == "pcap" else 1
    assert [r.timestamp_ns // resolution for r in records] == [ns // resolution for _, _, ns, _ in packets]
    if file_type == "pcapng":
        assert [r.outbound for r in records] == [a.outbound for _, a, _, _ in packets]


# ---------------------------------------------------------------- classic pcap variants, by hand


def classic_pcap(frames, byte_order: str, nanoseconds: bool, linktype: int = 101) -> bytes:
    magic = 0xA1B23C4D if nanoseconds else 0xA1B2C3D4
    units = 10**9 if nanoseconds else 10**6
    out = [struct.pack(byte_order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)]
    for ns, frame in frames:
        seconds, rest = divmod(ns, 10**9)
        out.append(struct.pack(byte_order + "IIII", seconds, rest * units // 10**9, len(frame), len(frame)) + frame)
    return b"".join(out)


@pytest.mark.parametrize("byte_order", ["<", ">"])
@pytest.mark.parametrize("nanoseconds", [False, True])
def test_classic_pcap_every_magic(tmp_path, byte_order, nanoseconds):
    frames = [(BASE_NS + 123_456_789 * i, ipv4_udp(i, i)) for i in range(5)]
    path = tmp_path / "classic.pcap"
    path.write_bytes(classic_pcap(frames, byte_order, nanoseconds))
    records = read_capture(path)
    assert [r.raw for r in records] == [frame for _, frame in frames]
    step = 1 if nanoseconds else 1000
    assert [r.timestamp_ns for r in records] == [ns // step * step for ns, _ in frames]
    assert all(r.outbound is None for r in records)
    # tshark agrees with our reading of the file (big-endian included).
    rows = tshark_fields(path, "frame.time_epoch")
    assert [epoch_ns(row[0]) for row in rows] == [r.timestamp_ns for r in records]


def test_big_endian_pcapng_with_two_sections(tmp_path):
    ip = ipv4_udp(1, 2)

    def section(order_cls, direction: int, ts: int) -> bytes:
        shb_cls, idb_cls, epb_cls, opt_cls = order_cls
        opts = [opt_cls(code=9, data=b"\x09"), opt_cls(code=0, data=b"")]
        epb_opts = [opt_cls(code=2, data=struct.pack(">I" if shb_cls is ng.SectionHeaderBlock else "<I", direction)),
                    opt_cls(code=0, data=b"")]
        return (bytes(shb_cls()) + bytes(idb_cls(linktype=101, opts=opts))
                + bytes(epb_cls(iface_id=0, ts_high=ts >> 32, ts_low=ts & 0xFFFFFFFF, pkt_data=ip, opts=epb_opts)))

    big = (ng.SectionHeaderBlock, ng.InterfaceDescriptionBlock, ng.EnhancedPacketBlock, ng.PcapngOption)
    little = (ng.SectionHeaderBlockLE, ng.InterfaceDescriptionBlockLE, ng.EnhancedPacketBlockLE, ng.PcapngOptionLE)
    path = tmp_path / "sections.pcapng"
    path.write_bytes(section(big, 2, BASE_NS) + section(little, 1, BASE_NS + 5))
    records = read_capture(path)
    assert [(r.raw, r.outbound, r.timestamp_ns) for r in records] == [(ip, True, BASE_NS), (ip, False, BASE_NS + 5)]
    assert [int(row[0], 16) for row in tshark_fields(path, "frame.packet_flags_direction")] == [2, 1]


# ---------------------------------------------------------------- corrupt and truncated files


def our_file(tmp_path, count=10) -> tuple[bytes, list[int]]:
    """The bytes of a pcapng file of `count` packets and the offset of each packet's block."""
    path = tmp_path / "src.pcapng"
    write_capture(path, sample_packets(count, seed=5))
    data = path.read_bytes()
    offsets, offset = [], 0
    while offset < len(data):
        block_type, length = struct.unpack_from("<II", data, offset)
        if block_type == 6:
            offsets.append(offset)
        offset += length
    return data, offsets


def test_truncated_pcapng_names_the_offset_and_keeps_earlier_packets(tmp_path):
    data, offsets = our_file(tmp_path)
    cut_block = offsets[7]
    for cut in (cut_block + 5, cut_block + 20, offsets[8] - 1):
        with pytest.raises(CaptureFileError) as caught:
            read_capture(data[:cut])
        error = caught.value
        assert error.offset == cut_block
        assert "cut short" in str(error) and f"offset {cut_block}" in str(error)
        assert len(error.records) == 7
        assert [r.raw for r in error.records] == [raw for raw, _, _, _ in sample_packets(10, seed=5)[:7]]


def test_iterator_yields_packets_before_raising(tmp_path):
    data, offsets = our_file(tmp_path)
    path = tmp_path / "cut.pcapng"
    path.write_bytes(data[:offsets[4] + 30])
    seen = []
    with pytest.raises(CaptureFileError) as caught:
        for record in iter_capture(path):
            seen.append(record)
    assert len(seen) == 4 and caught.value.count == 4
    assert str(path) in str(caught.value)


def test_corrupt_block_length_is_reported_where_it_is(tmp_path):
    data, offsets = our_file(tmp_path)
    corrupt = bytearray(data)
    struct.pack_into("<I", corrupt, offsets[3] + 4, 0x7FFFFFF0)
    with pytest.raises(CaptureFileError) as caught:
        read_capture(bytes(corrupt))
    assert caught.value.offset == offsets[3] and len(caught.value.records) == 3

    corrupt = bytearray(data)
    struct.pack_into("<I", corrupt, offsets[2] + 4, struct.unpack_from("<I", data, offsets[2] + 4)[0] + 4)
    with pytest.raises(CaptureFileError, match="trailing length") as caught:
        read_capture(bytes(corrupt))
    assert caught.value.offset == offsets[2] and len(caught.value.records) == 2


def test_corrupt_packet_fields(tmp_path):
    data, offsets = our_file(tmp_path)
    corrupt = bytearray(data)
    struct.pack_into("<I", corrupt, offsets[5] + 20, 5000)   # caplen beyond the block
    with pytest.raises(CaptureFileError, match="captured bytes") as caught:
        read_capture(bytes(corrupt))
    assert caught.value.offset == offsets[5] and len(caught.value.records) == 5

    corrupt = bytearray(data)
    struct.pack_into("<I", corrupt, offsets[1] + 8, 40)      # an interface never described
    with pytest.raises(CaptureFileError, match="interface 40") as caught:
        read_capture(bytes(corrupt))
    assert caught.value.offset == offsets[1] and len(caught.value.records) == 1


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b"\x0a\x0d", "too short"),
    (b"GIF89a" + bytes(40), "not a pcap or pcapng file"),
    (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)[:20], "header cut short"),
    (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 147), "link type 147"),
    (struct.pack("<II", 0x0A0D0D0A, 28) + b"\x99\x99\x99\x99" + bytes(16), "byte-order magic"),
])
def test_bad_headers(content, message):
    with pytest.raises(CaptureFileError, match=message) as caught:
        read_capture(content)
    assert caught.value.records == []


def test_truncated_classic_pcap(tmp_path):
    frames = [(BASE_NS + i, ipv4_udp(i, 9)) for i in range(4)]
    data = classic_pcap(frames, "<", True)
    record_len = 16 + len(frames[0][1])
    third = 24 + 2 * record_len
    for cut in (third + 3, third + 16 + 4):
        with pytest.raises(CaptureFileError, match="cut short") as caught:
            read_capture(data[:cut])
        assert caught.value.offset == third and len(caught.value.records) == 2
    corrupt = bytearray(data)
    struct.pack_into("<I", corrupt, 24 + record_len + 8, 10**7)
    with pytest.raises(CaptureFileError, match="captured bytes") as caught:
        read_capture(bytes(corrupt))
    assert caught.value.offset == 24 + record_len and len(caught.value.records) == 1


def test_missing_file_is_a_capture_file_error(tmp_path):
    with pytest.raises(CaptureFileError, match="cannot open") as caught:
        CaptureReader(tmp_path / "nowhere.pcapng")
    assert "nowhere.pcapng" in str(caught.value)


@pytest.mark.netns
def test_live_capture_by_tshark_in_a_namespace(tmp_path):
    """A file tshark captured for real (Linux cooked, loopback) reads back as the packets sent."""
    tshark = require_tool("tshark")
    prerequisites = os.geteuid() == 0 and shutil.which("ip") is not None
    if not prerequisites:
        message = "needs root and iproute2 to capture inside a network namespace"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    namespace = f"dgpcap{os.getpid()}"
    path = tmp_path / "live.pcapng"
    subprocess.run(["ip", "netns", "add", namespace], check=True, timeout=30)
    try:
        subprocess.run(["ip", "-n", namespace, "link", "set", "lo", "up"], check=True, timeout=30)
        # Capture the two datagrams and the two port-unreachable replies the kernel sends back.
        capture = subprocess.Popen(["ip", "netns", "exec", namespace, tshark, "-q", "-i", "lo", "-c", "4",
                                    "-w", str(path), "-f", "udp or icmp or icmp6"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            sender = ("import socket, time\n"
                      "for _ in range(100):\n"
                      "    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'v4', ('127.0.0.1', 9))\n"
                      "    socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).sendto(b'v6', ('::1', 9))\n"
                      "    time.sleep(0.1)\n")
            # Keeps sending until tshark has what it wants (it starts asynchronously).
            sending = subprocess.Popen(["ip", "netns", "exec", namespace, sys.executable, "-c", sender])
            try:
                capture.wait(timeout=20)
            finally:
                sending.kill()
                sending.wait()
        finally:
            if capture.poll() is None:
                capture.kill()
            capture.wait()
    finally:
        subprocess.run(["ip", "netns", "del", namespace], timeout=30)
    assert capture.returncode == 0, capture.stderr.read()
    records = read_capture(path)
    assert len(records) == 4
    assert {r.raw[0] >> 4 for r in records} <= {4, 6}
    assert all(r.loopback for r in records)
    assert len(tshark_fields(path, "frame.number")) == 4


def test_random_damage_only_ever_raises_capture_file_error():
    buffer = io.BytesIO()
    with PcapngWriter(buffer) as writer:
        writer.write_batch(sample_packets(20))
    sources = [buffer.getvalue(), classic_pcap([(BASE_NS + i, ipv4_udp(i, i)) for i in range(10)], ">", True)]
    rng = random.Random(2)
    faults = 0
    for _ in range(2000):
        damaged = bytearray(rng.choice(sources))
        for _ in range(rng.randrange(1, 6)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        if rng.random() < 0.3:
            damaged = damaged[:rng.randrange(len(damaged))]
        try:
            read_capture(bytes(damaged))
        except CaptureFileError as error:
            faults += 1
            assert 0 <= error.offset <= len(damaged)
    assert faults > 0


def test_write_capture_streams_a_generator_in_batches(tmp_path):
    path = tmp_path / "gen.pcapng"
    source = sample_packets(25)
    assert write_capture(path, iter(source), batch=7) == 25
    assert [r.raw for r in read_capture(path)] == [raw for raw, _, _, _ in source]
    writer = PcapngWriter(tmp_path / "closed.pcapng")
    writer.close()
    with pytest.raises(ValueError, match="closed for writing"):
        writer.write(source[0][0])
