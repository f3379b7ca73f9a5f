"""divertgui.pydivert judged by pydivert itself: the same packets read and written the same way.

pydivert (installed with the test extra) is the reference here only; the
package under test never imports it.
"""

from __future__ import annotations

import errno
import random
import socket

import pydivert as reference
from pydivert import util as reference_util
import pytest

import divertgui.pydivert as pydivert
from divertgui.engine import header_fields, headers
from divertgui.engine.address import Address
from divertgui.engine.packet import Packet as EnginePacket
from tests import packet_gen

FIELDS = {
    "ipv4": ("hdr_len", "header_len", "tos", "diff_serv", "dscp", "ecn", "packet_len", "ident", "ttl",
             "protocol", "cksum", "flags", "frag_offset", "rf", "df", "mf", "src_addr", "dst_addr"),
    "ipv6": ("payload_len", "packet_len", "next_hdr", "hop_limit", "traffic_class", "flow_label", "ecn",
             "diff_serv", "src_addr", "dst_addr", "header_len"),
    "tcp": ("src_port", "dst_port", "seq_num", "ack_num", "data_offset", "reserved", "control_bits", "ns",
            "cwr", "ece", "urg", "ack", "psh", "rst", "syn", "fin", "window", "cksum", "urg_ptr", "header_len",
            "payload_len", "payload"),
    "udp": ("src_port", "dst_port", "payload_len", "cksum", "header_len", "payload"),
    "icmp": ("type", "code", "cksum", "header_len", "payload"),
}
# Writable fields and the values to try: (header, field, lowest, highest).
WRITABLE = [
    ("ipv4", "tos", 0, 255), ("ipv4", "dscp", 0, 63), ("ipv4", "ecn", 0, 3), ("ipv4", "ident", 0, 65535),
    ("ipv4", "ttl", 0, 255), ("ipv4", "flags", 0, 7), ("ipv4", "frag_offset", 0, 8191), ("ipv4", "df", 0, 1),
    ("ipv4", "mf", 0, 1), ("ipv4", "rf", 0, 1), ("ipv4", "cksum", 0, 65535), ("ipv4", "packet_len", 0, 65535),
    ("ipv6", "hop_limit", 0, 255), ("ipv6", "traffic_class", 0, 255), ("ipv6", "flow_label", 0, (1 << 20) - 1),
    ("ipv6", "payload_len", 0, 65535), ("ipv6", "ecn", 0, 3), ("ipv6", "next_hdr", 0, 255),
    ("tcp", "seq_num", 0, 2**32 - 1), ("tcp", "ack_num", 0, 2**32 - 1), ("tcp", "control_bits", 0, 511),
    ("tcp", "window", 0, 65535), ("tcp", "urg_ptr", 0, 65535), ("tcp", "reserved", 0, 7), ("tcp", "syn", 0, 1),
    ("tcp", "data_offset", 5, 15), ("tcp", "src_port", 0, 65535), ("udp", "dst_port", 0, 65535),
    ("udp", "payload_len", 0, 65000), ("udp", "cksum", 0, 65535), ("icmp", "type", 0, 255),
    ("icmp", "code", 0, 255),
]


def well_formed(raw: bytes) -> bool:
    """Every header fits, the IP length is the packet's, and the extension headers are pydivert's.

    On other packets the views follow WinDivert's parser, as the filter
    does, where pydivert's own parser reads further (docs/porting.md).
    """
    layout = headers.parse_headers(raw)
    if layout is None:
        return False
    packet = EnginePacket(raw)
    if (packet.ipv4.length if layout.version == 4 else packet.ipv6.length + 40) != len(raw):
        return False
    if packet.udp is not None and packet.udp.length != len(raw) - layout.transport_offset:
        return False
    kinds = [kind for kind, _offset, _length in layout.ext_headers]
    if header_fields.IPPROTO_MH in kinds or kinds.count(header_fields.IPPROTO_FRAGMENT) > 1:
        return False
    if layout.protocol in header_fields.IPV6_EXTENSION_HEADERS:
        return False    # an extension header that does not fit
    if layout.frag_offset == 0 and layout.protocol in header_fields.TRANSPORT_HEADER_MIN:
        if layout.transport != layout.protocol:
            return False
        if packet.tcp is not None and packet.tcp.hdr_len * 4 > len(raw) - layout.transport_offset:
            return False
    return True


def packets(count: int, seed: int = 11):
    """`count` well-formed IPv4 and IPv6 packets of every kind packet_gen makes."""
    rng = random.Random(seed)
    made = 0
    while made < count:
        raw = packet_gen.ipv4_packet(rng) if rng.random() < 0.5 else packet_gen.ipv6_packet(rng)
        if well_formed(raw):
            made += 1
            yield raw


def pair(raw: bytes):
    return pydivert.Packet(bytearray(raw)), reference.Packet(bytearray(raw))


def read(packet, header: str):
    view = getattr(packet, header)
    if view is None:
        return None
    return {name: getattr(view, name) for name in FIELDS[header]}


@pytest.mark.parametrize("raw", list(packets(300)), ids=range(300))
def test_fields_read_as_pydivert_reads_them(raw):
    ours, theirs = pair(raw)
    for header in FIELDS:
        assert read(ours, header) == read(theirs, header), header
    for name in ("address_family", "protocol", "src_addr", "dst_addr", "src_port", "dst_port", "payload"):
        assert getattr(ours, name) == getattr(theirs, name), name


@pytest.mark.parametrize("header, field, low, high", WRITABLE)
def test_fields_write_the_bytes_pydivert_writes(header, field, low, high):
    rng = random.Random(f"{header}.{field}")
    tried = 0
    for raw in packets(200):
        ours, theirs = pair(raw)
        if getattr(ours, header) is None:
            continue
        value = rng.choice((low, high, rng.randint(low, high)))
        setattr(getattr(ours, header), field, value)
        setattr(getattr(theirs, header), field, value)
        assert bytes(ours.raw) == bytes(theirs.raw), (field, value)
        tried += 1
    assert tried


def test_packet_builder_builds_pydivert_s_bytes():
    for build in (lambda b: b.ipv4("10.0.0.1", "10.0.0.2", 3).tcp(1234, 80).payload(b"GET /"),
                  lambda b: b.ipv6("2001:db8::1", "fe80::2", 9).udp(53, 5353).payload(b"\x00" * 33),
                  lambda b: b.ipv4().udp(1, 2)):
        ours = build(pydivert.PacketBuilder()).build()
        theirs = build(reference.PacketBuilder()).build()
        assert bytes(ours.raw) == bytes(theirs.raw)
        assert ours.is_checksum_valid


def test_payload_of_another_length_keeps_the_lengths_right():
    for raw in packets(100):
        ours, theirs = pair(raw)
        if ours.tcp is None and ours.udp is None:
            continue
        ours.payload = theirs.payload = b"x" * 7
        assert bytes(ours.raw) == bytes(theirs.raw)


def test_the_packet_is_the_engine_s():
    buffer = bytearray(packet_gen.ipv4_packet(random.Random(3)))
    packet = pydivert.Packet(buffer, interface=(7, 2), direction=pydivert.Direction.INBOUND, loopback=True)
    assert packet.address == Address(outbound=False, loopback=True, if_idx=7, sub_if_idx=2,
                                     ip_checksum=False, tcp_checksum=False, udp_checksum=False)
    packet.ipv4.ttl = 1
    assert buffer[8] == 1
    packet.direction = pydivert.Direction.OUTBOUND
    assert packet.address.outbound and packet.is_outbound and not packet.is_inbound


def test_setting_a_field_clears_the_checksum_flags_and_recalculating_sets_them():
    packet = pydivert.PacketBuilder().ipv4().udp(1, 2).payload(b"abc").build()
    assert packet.ip_checksum and packet.udp_checksum and packet.is_checksum_valid
    packet.udp.dst_port = 3
    assert not (packet.ip_checksum or packet.tcp_checksum or packet.udp_checksum)
    assert not packet.is_checksum_valid
    assert packet.recalculate_checksums() == 1
    assert packet.ip_checksum and packet.udp_checksum and packet.is_checksum_valid


def test_wd_addr_is_the_address_in_windivert_s_layout():
    packet = pydivert.Packet(b"\x60" + bytes(39), interface=(4, 1), direction=pydivert.Direction.OUTBOUND,
                             impostor=True, timestamp=123, ip_checksum=True)
    wd = packet.wd_addr
    assert (wd.Outbound, wd.Impostor, wd.IPv6, wd.Timestamp, wd.IPChecksum) == (1, 1, 1, 123, 1)
    assert (wd.Network.IfIdx, wd.Network.SubIfIdx) == (4, 1)
    again = pydivert.Packet(bytes(packet.raw), wd_addr=wd)
    assert again.address == packet.address


def test_matches_evaluates_the_filter_with_the_address():
    packet = pydivert.PacketBuilder().ipv4("10.0.0.1", "10.0.0.2").tcp(5, 80).build()
    assert packet.matches("outbound and tcp.DstPort == 80 and ip.SrcAddr == 10.0.0.1")
    packet.direction = pydivert.Direction.INBOUND
    assert not packet.matches("outbound")
    with pytest.raises(ValueError, match="Invalid argument"):
        packet.matches("tcp and")


def test_check_filter_reports_where_a_filter_is_wrong():
    assert pydivert.Divert.check_filter("tcp.DstPort == 80") == (True, 0, "")
    ok, position, message = pydivert.Divert.check_filter("tcp.DstPort == ")
    assert not ok and position == 15 and message
    assert pydivert.Divert.check_filter("processId == 1", pydivert.Layer.NETWORK)[0] is False


def test_constants_have_windivert_s_values():
    assert pydivert.Flag.DEFAULT == 0 and pydivert.Flag.SNIFF == 1 and pydivert.Flag.FRAGMENTS == 32
    assert [int(p) for p in (pydivert.Param.QUEUE_LEN, pydivert.Param.QUEUE_TIME,
                             pydivert.Param.QUEUE_SIZE)] == [0, 1, 2]
    for name in ("Layer", "Direction", "Protocol", "RecvFlag"):
        assert {m.name: int(m) for m in getattr(pydivert, name)} == \
            {m.name: int(m) for m in getattr(reference, name)}, name
    assert {m.name: int(m) for m in reference.CalcChecksumsOption} == \
        {m.name: int(m) for m in pydivert.CalcChecksumsOption}


def test_submodules_are_where_pydivert_has_them():
    from divertgui.pydivert.consts import Direction, Flag  # noqa: F401
    from divertgui.pydivert.packet import Packet
    from divertgui.pydivert.packet.builder import PacketBuilder  # noqa: F401
    from divertgui.pydivert.packet.header import PayloadMixin, PortMixin  # noqa: F401
    from divertgui.pydivert.util import fromhex, internet_checksum
    from divertgui.pydivert.windivert import WinDivert
    assert WinDivert is pydivert.Divert and Packet is pydivert.Packet
    data = fromhex("4500001c00014000401100007f0000017f000001")
    assert internet_checksum(data) == reference_util.internet_checksum(data)
    assert internet_checksum(data + b"\x07") == reference_util.internet_checksum(data + b"\x07")


def test_a_handle_that_is_not_open_says_so():
    handle = pydivert.Divert("true")
    for call in (handle.recv, handle.stats, handle.close, lambda: handle.send(pydivert.Packet(b""))):
        with pytest.raises(RuntimeError, match="not open"):
            call()
    assert not handle.is_open and "closed" in repr(handle)


@pytest.mark.parametrize("arguments", [("tcp and",), ("true", pydivert.Layer.NETWORK, 99999),
                                       ("true", pydivert.Layer.NETWORK, 0, pydivert.Flag.SNIFF | pydivert.Flag.DROP)])
def test_open_refuses_bad_arguments_with_einval(arguments):
    with pytest.raises(OSError) as caught:
        pydivert.Divert(*arguments).open()
    assert caught.value.errno == errno.EINVAL


def test_address_family():
    v4, v6 = pydivert.PacketBuilder().ipv4().udp(1, 2).build(), pydivert.PacketBuilder().ipv6().udp(1, 2).build()
    assert (v4.address_family, v6.address_family) == (socket.AF_INET, socket.AF_INET6)
    assert pydivert.Packet(b"\x45").address_family is None


def test_the_filter_is_text_that_also_filters_what_the_handle_receives():
    handle = pydivert.Divert("  udp  ")
    assert handle.filter == "udp" and isinstance(handle.filter, str)
    handle.filter = "tcp"
    assert handle.filter == "tcp" and "filter='tcp'" in repr(handle)
    wanted = pydivert.PacketBuilder().ipv4().udp(1, 53).build()
    other = pydivert.PacketBuilder().ipv4().udp(1, 54).build()
    text = handle.filter
    text._handle = [other, wanted, other]   # stands for what the handle receives
    assert list(text(dst_port=53)) == [wanted]
    assert list(text(dst_port=53, direction="inbound")) == []


def test_a_packet_let_go_is_freed_at_once():
    """No reference cycle: an unsent received packet is dropped as soon as the program lets it go."""
    import gc
    gc.collect()
    gc.disable()
    try:
        packet = pydivert.PacketBuilder().ipv4().tcp(1, 2).build()
        assert packet.tcp.dst_port == 2 and packet.ipv4.ttl and packet.payload == b""
        del packet
        assert gc.collect() == 0    # nothing was left for the cycle collector
    finally:
        gc.enable()


def test_event_layer_data_reads_as_windivert_s_structures():
    from divertgui.engine.address import EndpointData, ReflectData
    endpoint = EndpointData(endpoint_id=7, parent_endpoint_id=3, process_id=99, local_addr=0xFFFF_0A000001,
                            remote_addr=(1 << 127) | 5, local_port=80, remote_port=5000, protocol=6)
    socket_event = pydivert.Packet(b"", layer=pydivert.Layer.SOCKET, event=4, socket=endpoint)
    data = socket_event.socket
    assert (data.EndpointId, data.ParentEndpointId, data.ProcessId) == (7, 3, 99)
    assert (data.LocalPort, data.RemotePort, data.Protocol) == (80, 5000, 6)
    assert list(data.LocalAddr) == [0x0A000001, 0xFFFF, 0, 0]
    assert list(data.RemoteAddr) == [5, 0, 0, 1 << 31]
    assert socket_event.flow is None and socket_event.reflect is None
    again = pydivert.Packet(b"", wd_addr=socket_event.wd_addr)
    assert again.address.flow == endpoint and again.event == 4

    reflect = ReflectData(timestamp=5, process_id=12, layer=pydivert.Layer.NETWORK, flags=1, priority=-3)
    reflect_event = pydivert.Packet(b"", layer=pydivert.Layer.REFLECT, reflect=reflect)
    assert reflect_event.reflect.Priority == -3 and reflect_event.reflect.Flags == 1
    assert pydivert.Packet(b"", wd_addr=reflect_event.wd_addr).address.reflect == reflect
    reflect_event.reflect = socket_event.wd_addr.Reflect    # a WinDivert structure is taken too
    assert reflect_event.address.reflect.process_id == socket_event.wd_addr.Reflect.ProcessId
