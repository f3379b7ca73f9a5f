"""This filter implementation against the reference's, on generated filters and packets."""

import random
import struct

import pytest

from divertgui.engine.address import Layer
from divertgui.engine.filter import FilterError, compile_filter, format_filter
from tests import packet_gen


def _mine(text, layer=Layer.NETWORK):
    try:
        return compile_filter(text, layer), None
    except FilterError as exc:
        return None, (exc.message, exc.position)


@pytest.mark.parametrize("seed", range(4))
def test_same_answers_on_generated_triples(reference, seed):
    rng = random.Random(seed)
    compared = 0
    for _ in range(150):
        text = packet_gen.filter_text(rng)
        layer = Layer.NETWORK if rng.random() < 0.85 else Layer.NETWORK_FORWARD
        ok, message, position = reference.compile(text, layer)
        compiled, error = _mine(text, layer)
        assert ok == (compiled is not None), (text, message, position, error)
        if not ok:
            assert error == (message, position), text
            continue
        for _ in range(20):
            raw = packet_gen.packet(rng)
            address = packet_gen.address_for(rng, raw, layer)
            expected = bool(reference.eval(text, raw, address))
            assert compiled.match(raw, address) is expected, (text, raw.hex(), address)
            compared += 1
    assert compared > 1000


@pytest.mark.parametrize("seed", range(3))
def test_same_filters_judged_invalid(reference, seed):
    rng = random.Random(100 + seed)
    for _ in range(300):
        text = packet_gen.broken_filter_text(rng)
        if reference.crashes_reference(text):
            continue
        ok, message, position = reference.compile(text)
        compiled, error = _mine(text)
        assert ok == (compiled is not None), (text, message, position, error)
        if not ok:
            assert error == (message, position), text


@pytest.mark.parametrize("field", packet_gen.INDEX_FIELDS)
def test_every_index_form(reference, field):
    rng = random.Random(field)
    for index in ("0", "1", "3b", "7", "-1", "-1b", "-2", "-4b", "-6", "12", "40b", "-40b", "0x10"):
        text = f"{field}[{index}] {rng.choice(packet_gen.OPS)} {rng.randrange(1 << 16)}"
        compiled, error = _mine(text)
        ok, message, position = reference.compile(text)
        assert ok == (compiled is not None), text
        if not ok:
            continue
        for _ in range(40):
            raw = packet_gen.packet(rng)
            address = packet_gen.address_for(rng, raw)
            assert compiled.match(raw, address) is bool(reference.eval(text, raw, address)), (text, raw.hex())


def test_random_fields_follow_the_packet_hash_and_timestamp(reference):
    rng = random.Random(7)
    for _ in range(600):
        text = f"random{rng.choice((8, 16, 32))} {rng.choice(('<', '>=', '=='))} {rng.getrandbits(8)}"
        raw = packet_gen.packet(rng)
        address = packet_gen.address_for(rng, raw)
        assert compile_filter(text).match(raw, address) is bool(reference.eval(text, raw, address))


def test_canonical_text_of_simple_filters(reference):
    for text in ("tcp.DstPort=80 and not udp", "(ip ? true : false)", "tcp && !udp || icmp",
                 "ip.SrcAddr == ::ffff:10.0.0.1", "tcp.DstPort == -1", "packet32[-1] == 5",
                 "ip.SrcAddr == 1.2.3.4 or ip.DstAddr == 5.6.7.8 and tcp", "(tcp and (udp ? icmp : (ip or ipv6)))",
                 "tcp.Syn == 1", "event == PACKET", "random16 >= 0x8000", "not not tcp", "zero",
                 "ipv6.SrcAddr == ::ffff:1.2.3.4", "localAddr == 0x5", "tcp.Checksum == 5"):
        assert format_filter(text) == reference.format(text), text


def test_canonical_text_of_generated_filters(reference):
    rng = random.Random(11)
    compared = 0
    for _ in range(400):
        text = packet_gen.filter_text(rng)
        layer = Layer.NETWORK if rng.random() < 0.85 else Layer.NETWORK_FORWARD
        expected = reference.format(text, layer)
        if expected is None:
            continue
        assert format_filter(text, layer) == expected, text
        compared += 1
    assert compared > 200


def test_canonical_text_parses_back_to_the_same_filter(reference):
    rng = random.Random(12)
    for _ in range(200):
        text = packet_gen.filter_text(rng)
        if reference.compile(text)[0]:
            canonical = format_filter(text)
            assert reference.compile(canonical)[0], canonical
            assert format_filter(canonical) == reference.format(canonical), canonical


@pytest.mark.parametrize("text", [
    " or ".join(f"tcp.DstPort == {i}" for i in range(256)),
    " or ".join(f"tcp.DstPort == {i}" for i in range(257)),
    " or ".join(["tcp"] * 1000),
    "not " * 1276 + "tcp",
    "not " * 1277 + "tcp",
    "(" * 340 + "tcp" + ")" * 340,
    "(" * 341 + "tcp" + ")" * 341,
    "(tcp and (udp or " * 127 + "icmp" + "))" * 127,
    "(tcp and (udp or " * 128 + "icmp" + "))" * 128,
    "(tcp ? " * 127 + "udp" + " : icmp)" * 127,
    "tcp.DstPort == " + "1" * 39,
    "tcp.DstPort == " + "1" * 40,
    "@WinDiv_",
    "x:",
    "tcp and y: udp",
])
def test_limits_and_oddities_like_the_reference(reference, text):
    ok, message, position = reference.compile(text)
    compiled, error = _mine(text)
    assert ok == (compiled is not None), (message, position, error)
    if not ok:
        if position == 0xFFFFFFFF:
            # The reference reports position -1 here; positions are never negative in this API.
            assert error == (message, 0)
        else:
            assert error == (message, position)
    else:
        assert format_filter(text) == reference.format(text)


EVENT_LAYERS = (Layer.FLOW, Layer.SOCKET, Layer.REFLECT)


@pytest.mark.parametrize("layer", EVENT_LAYERS, ids=lambda layer: layer.name)
@pytest.mark.parametrize("seed", range(2))
def test_event_layers_same_answers_on_generated_filters(reference, layer, seed):
    rng = random.Random(f"{layer.name}{seed}")
    compared = refused = 0
    for _ in range(250):
        text = packet_gen.event_filter_text(rng, layer)
        if reference.crashes_reference(text):
            continue
        ok, message, position = reference.compile(text, layer)
        compiled, error = _mine(text, layer)
        assert ok == (compiled is not None), (text, message, position, error)
        if not ok:
            assert error == (message, position), text
            refused += 1
            continue
        assert format_filter(text, layer) == reference.format(text, layer), text
        for _ in range(12):
            address = packet_gen.event_address(rng, layer)
            expected = reference.eval(text, b"", address)
            assert expected is not None, (text, address)
            assert compiled.match(b"", address) is expected, (text, address)
            compared += 1
    assert compared > 1000 and refused > 5


@pytest.mark.parametrize("layer", list(Layer), ids=lambda layer: layer.name)
def test_every_field_and_macro_is_judged_like_the_reference_at_every_layer(reference, layer):
    from divertgui.engine.filter.fields import FIELDS, MACROS
    for name, spec in FIELDS.items():
        text = f"{name}[0] == 1" if spec.index_size else f"{name} == 1"
        ok, message, position = reference.compile(text, layer)
        compiled, error = _mine(text, layer)
        assert ok == (compiled is not None), (text, message, error)
        if ok:
            assert format_filter(text, layer) == reference.format(text, layer), text
        else:
            assert error == (message, position), text
    for macro in MACROS:
        text = f"zero == {macro}"
        ok, message, position = reference.compile(text, layer)
        compiled, error = _mine(text, layer)
        assert ok == (compiled is not None), (text, message, error)
        assert (compiled is None) or format_filter(text, layer) == reference.format(text, layer), text


@pytest.mark.parametrize("text,layer", [
    ("event == CONNECT and processId == 1234", Layer.SOCKET),
    ("event == CLOSE", Layer.SOCKET),
    ("event == CLOSE or event == OPEN", Layer.REFLECT),
    ("layer == SOCKET and priority < -3", Layer.REFLECT),
    ("layer = 7", Layer.REFLECT),
    ("endpointId == 0x123456789 or parentEndpointId > 4294967296", Layer.FLOW),
    ("event == ESTABLISHED and tcp and remotePort == 443 and remoteAddr == 10.0.0.1", Layer.FLOW),
    ("localAddr == ::1 and not outbound and loopback", Layer.SOCKET),
])
def test_canonical_text_at_the_event_layers(reference, text, layer):
    assert format_filter(text, layer) == reference.format(text, layer)


def _flow_label_words(rng):
    """The first word of an IPv6 header: every bit of the traffic class and
    flow label alone and with all the others, then random patterns."""
    for bit in range(28):
        yield 6 << 28 | 1 << bit
        yield 6 << 28 | (0xFFFFFFF ^ 1 << bit)
    yield 6 << 28
    yield 6 << 28 | 0xFFFFFFF
    for _ in range(400):
        yield 6 << 28 | rng.getrandbits(28)


def test_flow_label_is_read_as_windivert_reads_it(reference):
    # dll/windivert_shared.c: val[0] = ntohl(WINDIVERT_IPV6HDR_GET_FLOWLABEL(ipv6_header)),
    # over include/windivert.h's bit fields FlowLabel0:4 and UINT16 FlowLabel1.
    rng = random.Random(28)
    compared = 0
    for word in _flow_label_words(rng):
        raw = struct.pack("!IHBB16s16s", word, 0, 59, 64, bytes(15) + b"\1", bytes(15) + b"\2")
        address = packet_gen.address_for(rng, raw)
        rfc_label = word & 0xFFFFF
        windivert_value = (word & 0xFFFF) << 16 | (word >> 16 & 0xF) << 8
        for constant in {rfc_label, windivert_value & 0xFFFFF, (windivert_value >> 8) & 0xFFFFF, 0, 0xFFFFF,
                         rng.randrange(1 << 20), rng.randrange(1 << 12) << 8}:
            for op in packet_gen.OPS:
                text = f"ipv6.FlowLabel {op} {constant}"
                assert compile_filter(text).match(raw, address) is bool(reference.eval(text, raw, address)), \
                    (text, hex(word))
                compared += 1
    assert compared > 20000


@pytest.mark.parametrize("layer", list(Layer), ids=lambda layer: layer.name)
def test_filter_objects_read_back_as_the_reference_reads_them(reference, layer):
    """The REFLECT layer's data: WinDivert's object text of a filter, decoded by the reference itself."""
    from divertgui.engine.filter.serialize import filter_object
    rng = random.Random(f"object{layer.name}")
    compared = 0
    for _ in range(150):
        text = packet_gen.filter_text(rng) if layer in (Layer.NETWORK, Layer.NETWORK_FORWARD) \
            else packet_gen.event_filter_text(rng, layer)
        if reference.crashes_reference(text) or not reference.compile(text, layer)[0]:
            continue
        text_object = filter_object(compile_filter(text, layer).program)
        assert text_object.startswith("@WinDiv_")
        assert reference.format(text_object, layer) == format_filter(text, layer) == \
            format_filter(text_object, layer), text
        compared += 1
    assert compared > 50


@pytest.mark.parametrize("text", [
    "ip.SrcAddr == 010.0.0.1", "ip.DstAddr == 4294967306.0.0.1", "ipv6.DstAddr == 64:ff9b::1.2.3.4",
    "ipv6.SrcAddr == ::ffff:1.2.3.4", "ipv6.SrcAddr == 1:0:2:3:4:5:6:7", "remoteAddr == 1:2:3:4:5:6:7::",
])
def test_address_literals_are_read_and_written_by_windivert_helpers(reference, text):
    # The reference's lexer reads addresses with WinDivertHelperParseIPv4/IPv6Address
    # and its formatter writes them as WinDivertHelperFormatIPv6Address does.
    ok, message, position = reference.compile(text)
    compiled, error = _mine(text)
    assert ok == (compiled is not None), (message, position, error)
    if ok:
        assert format_filter(text) == reference.format(text)
    else:
        assert error == (message, position)


@pytest.mark.parametrize("text", [
    "(tcp ? tcp.DstPort == 443 : udp.DstPort == 53)",
    "(tcp ? tcp.DstPort < 1024 or udp.DstPort == 53 : udp or icmp.Type == 8)",
    "(!tcp ? udp.SrcPort > 1000 : tcp.Syn)",
    "(tcp.DstPort == 80 ? tcp.PayloadLength > 0 : ip.TTL > 5)",
    "(udp ? udp.Payload[0] == 1 : icmpv6.Code == 0) and outbound",
    "tcp.Payload32[0] == 0x47455420 or udp.PayloadLength > 10",
    "(tcp or udp) and (tcp ? tcp.Payload16[-2] != 0 : udp.Payload[-1] > 7)",
    "tcp.Fin and (icmp ? icmp.Type == 0 : tcp.Rst)",
    "!tcp and !udp or tcp.SrcPort == 22",
])
def test_filters_that_need_a_transport_header_like_the_reference(reference, text):
    """The compiled function refuses a packet without the transport the filter needs
    as soon as the header walk ends, and trusts the branch of a conditional that tested it."""
    rng = random.Random(text)
    compiled = compile_filter(text)
    for _ in range(1500):
        raw = packet_gen.packet(rng)
        address = packet_gen.address_for(rng, raw)
        assert compiled.match(raw, address) is bool(reference.eval(text, raw, address)), (text, raw.hex())
