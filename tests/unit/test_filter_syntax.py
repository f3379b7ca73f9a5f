import pytest

from divertgui.engine.address import Layer
from divertgui.engine.filter import And, Cond, Const, FilterError, Or, Test, compile_filter, parse_filter
from divertgui.engine.filter import errors


@pytest.mark.parametrize("text", [
    "true", "false", "tcp", "tcp.DstPort == 80", "tcp.DstPort = 80", "tcp.DstPort==80&&udp",
    "tcp && !udp || icmp", "not not tcp", "(tcp ? udp : icmp)", "(tcp ?udp: icmp)", "packet[-1b] == 5",
    "packet32[-1] == 5", "tcp.Payload[0x10] == 1", "ip.SrcAddr == ::ffff:10.0.0.1", "localAddr == ::1",
    "ipv6.SrcAddr >= ::", "event == PACKET", "protocol == TCP", "tcp == - 1", "packet[ 1 ]", "tcp\tand\nudp",
])
def test_valid(text):
    assert compile_filter(text).text == text


@pytest.mark.parametrize("text, message, position", [
    ("", errors.PARSE_ERROR, 0),
    ("tcp and", errors.PARSE_ERROR, 7),
    ("tcp == 1 1", errors.PARSE_ERROR, 9),
    ("not (tcp)", errors.PARSE_ERROR, 4),
    ("tcp and TRUE", errors.PARSE_ERROR, 8),
    ("TCP.dstport == 1", errors.BAD_TOKEN, 0),
    ("tcp AND udp", errors.BAD_TOKEN, 4),
    ("event == CONNECT", errors.PARSE_ERROR, 9),
    ("layer == NETWORK", errors.BAD_TOKEN_FOR_LAYER, 0),
    ("ip.SrcAddr == 1.2.3", errors.BAD_TOKEN, 14),
    ("packet[65535] == 1", errors.INDEX_OUT_OF_BOUNDS, 12),
    ("packet16[-1b] == 5", errors.INDEX_OUT_OF_BOUNDS, 12),
    ("tcp # udp", errors.BAD_TOKEN, 5),
    ("(tcp ? udp)", errors.PARSE_ERROR, 10),
    ("tcp.DstPort == 340282366920938463463374607431768211456", errors.BAD_TOKEN, 15),
])
def test_invalid_with_message_and_position(text, message, position):
    with pytest.raises(FilterError) as info:
        compile_filter(text)
    assert (info.value.message, info.value.position) == (message, position)
    assert str(position) in str(info.value) and message in str(info.value)


def test_network_only_fields_are_refused_at_the_forward_layer():
    compile_filter("outbound", Layer.NETWORK)
    with pytest.raises(FilterError) as info:
        compile_filter("tcp and outbound", Layer.NETWORK_FORWARD)
    assert info.value.position == 8 and info.value.message == errors.BAD_TOKEN_FOR_LAYER


def test_tree_shape():
    tree = parse_filter("tcp.DstPort == 80 and (udp ? icmp : not packet[-2] == 1) or false")
    assert tree == And(Test("tcp.DstPort", "==", 80),
                       Cond(Test("udp", "!=", 0), Test("icmp", "!=", 0), Test("packet", "!=", 1, -2)))
    assert parse_filter("tcp or udp") == Or(Test("tcp", "!=", 0), Test("udp", "!=", 0))
    assert parse_filter("zero == 0") == Const(True)


def test_compiled_filters_are_cached():
    assert compile_filter("tcp and udp") is compile_filter("tcp and udp")


def test_program_is_the_reference_jump_table():
    from divertgui.engine.filter import ACCEPT, REJECT
    program = compile_filter("(tcp ? udp : icmp)").program
    assert [(step.test.field, step.success, step.failure) for step in program] == [
        ("tcp", 1, 2), ("udp", ACCEPT, REJECT), ("icmp", ACCEPT, REJECT)]


@pytest.mark.parametrize("text, message, position", [
    ("@WinDiv_", errors.BAD_OBJECT, 0),
    (" or ".join(["tcp"] * 257), errors.TOO_LONG, 0),
    ("not " * 1277 + "tcp", errors.TOO_LONG, 5111),
    ("(" * 341 + "tcp" + ")" * 341, errors.PARSE_ERROR, 341),
    ("tcp.DstPort == " + "1" * 40, errors.BAD_TOKEN, 15),
    ("tcp and y: udp", errors.BAD_TOKEN, 7),
])
def test_reference_limits(text, message, position):
    with pytest.raises(FilterError) as info:
        compile_filter(text)
    assert (info.value.message, info.value.position) == (message, position)


def test_values_compare_like_the_reference():
    # Fields of 32 bits or less compare with the low 32 bits of the value.
    assert parse_filter("tcp.SeqNum == 0x100000001") == Test("tcp.SeqNum", "==", 1)
    assert parse_filter("tcp.SeqNum > -0x100000002") == Test("tcp.SeqNum", ">", -2)
    assert parse_filter("ipv6.SrcAddr == ::1") == Test("ipv6.SrcAddr", "==", 1)
    assert parse_filter("ip.DstAddr == 10.0.0.1") == Test("ip.DstAddr", "==", 0xFFFF0A000001)
