"""nf_tables messages as the kernel reads them: the x_tables structures' layouts, a rule's
expressions, and the decoding of what a dump returns."""

from __future__ import annotations

import struct

import pytest

from divertgui.engine.backends import netfilter_rules, netlink, nftables
from divertgui.engine.backends.netlink import attribute, iter_attributes
from divertgui.engine.filter.bpf import Instruction
from divertgui.engine.filter.kernel import PacketMatch
from divertgui.engine.filter.kernel_native import NETWORK, TRANSPORT, Conjunction, FieldTest


def _attributes(data) -> dict[int, memoryview]:
    return dict(iter_attributes(data, 0, len(data)))


def _expression(element: bytes) -> tuple[str, dict[int, memoryview]]:
    """(name, data attributes) of one element of a rule's expression list."""
    (kind, value), = iter_attributes(element, 0, len(element))
    assert kind == nftables.LIST_ELEM
    parts = _attributes(value)
    name = bytes(parts[nftables.EXPR_NAME]).rstrip(b"\0").decode()
    return name, _attributes(parts[nftables.EXPR_DATA])


def test_the_nfqueue_target_is_revision_3_with_its_queues_and_bypass():
    name, data = _expression(nftables.nfqueue_target(16400, 2, bypass=True))
    assert name == "target"
    assert bytes(data[nftables.COMPAT_NAME]) == b"NFQUEUE\0"
    assert struct.unpack("!I", data[nftables.COMPAT_REV]) == (3,)
    # struct xt_NFQ_info_v3 in host order, padded to 8 bytes (XT_ALIGN).
    assert bytes(data[nftables.COMPAT_INFO]) == struct.pack("=HHH2x", 16400, 2, 0x01)
    assert struct.unpack("=HHH2x", _expression(nftables.nfqueue_target(7, 1, False))[1][3]) == (7, 1, 0)


def test_the_bpf_match_is_xt_bpf_info_v1_in_bytecode_mode():
    program = [Instruction(0x30, 0, 0, 9), Instruction(0x15, 0, 1, 17), Instruction(0x06, 0, 0, 0xFFFF),
               Instruction(0x06, 0, 0, 0)]
    name, data = _expression(nftables.bpf_match(program))
    info = bytes(data[nftables.COMPAT_INFO])
    assert name == "match" and bytes(data[nftables.COMPAT_NAME]) == b"bpf\0"
    assert struct.unpack("!I", data[nftables.COMPAT_REV]) == (1,)
    # mode, count, fd; 64 sock_filters; the kernel's pointer, aligned to 8: 528 bytes.
    assert len(info) == 528
    assert struct.unpack_from("=HHi", info) == (0, 4, 0)
    assert [struct.unpack_from("=HBBI", info, 8 + 8 * i) for i in range(4)] == [tuple(i) for i in program]
    assert info[8 + 8 * 4:] == bytes(528 - 8 - 8 * 4)
    with pytest.raises(ValueError, match="1 to 64"):
        nftables.bpf_match([Instruction(0x06, 0, 0, 0)] * 65)


def test_mark_tests_compare_host_order_and_ranges_network_order():
    equal = [_expression(e) for e in netfilter_rules.mark_masked(0xFFFF0000, 0x00050000)]
    assert [name for name, _ in equal] == ["meta", "bitwise", "cmp"]
    assert struct.unpack("!I", equal[0][1][nftables.META_KEY]) == (nftables.META_MARK,)
    mask = _attributes(equal[1][1][nftables.BITWISE_MASK])[nftables.DATA_VALUE]
    assert bytes(mask) == struct.pack("=I", 0xFFFF0000)
    value = _attributes(equal[2][1][nftables.CMP_DATA])[nftables.DATA_VALUE]
    assert bytes(value) == struct.pack("=I", 0x00050000)
    between = [_expression(e) for e in netfilter_rules.mark_masked_between(0xFFFFF000, 0x75951000, 0x7595F000)]
    assert [name for name, _ in between] == ["meta", "bitwise", "byteorder", "cmp", "cmp"]
    ops = [struct.unpack("!I", data[nftables.CMP_OP])[0] for name, data in between if name == "cmp"]
    limits = [bytes(_attributes(data[nftables.CMP_DATA])[nftables.DATA_VALUE]) for name, data in between
              if name == "cmp"]
    assert ops == [nftables.CMP_GTE, nftables.CMP_LTE]
    assert limits == [struct.pack("!I", 0x75951000), struct.pack("!I", 0x7595F000)]
    # From 0: no lower bound to test.
    assert [name for name, _ in map(_expression, netfilter_rules.mark_masked_between(0xFFFF0000, 0, 5 << 16))] \
        == ["meta", "bitwise", "byteorder", "cmp"]


def test_native_rules_load_the_protocol_and_compare_big_endian_fields_of_their_headers():
    udp = Conjunction(17, (FieldTest(TRANSPORT, 2, 2, "==", 53), FieldTest(TRANSPORT, 0, 2, ">=", 1024),
                           FieldTest(NETWORK, 6, 2, "==", 0, 0x1FFF)))
    address = Conjunction(None, (FieldTest(NETWORK, 24, 16, "<", 1 << 127),))
    rules = netfilter_rules.packet_matches(PacketMatch(loopback=False, native=(udp, address)))
    assert [needs for _, needs in rules] == [[], []]
    parsed = [_expression(e) for e in rules[0][0]]
    assert [name for name, _ in parsed] == ["meta", "cmp", "meta", "cmp", "payload", "cmp", "payload", "cmp",
                                            "payload", "bitwise", "cmp"]
    assert struct.unpack("!I", parsed[2][1][nftables.META_KEY]) == (nftables.META_L4PROTO,)
    values = [bytes(_attributes(data[nftables.CMP_DATA])[nftables.DATA_VALUE]) for name, data in parsed
              if name == "cmp"]
    assert values == [nftables.interface_name("lo"), b"\x11", struct.pack("!H", 53), struct.pack("!H", 1024),
                      bytes(2)]
    ops = [struct.unpack("!I", data[nftables.CMP_OP])[0] for name, data in parsed if name == "cmp"]
    assert ops == [nftables.CMP_NEQ, nftables.CMP_EQ, nftables.CMP_EQ, nftables.CMP_GTE, nftables.CMP_EQ]
    loads = [tuple(struct.unpack("!I", data[k])[0] for k in (nftables.PAYLOAD_BASE, nftables.PAYLOAD_OFFSET,
                                                             nftables.PAYLOAD_LEN))
             for name, data in parsed if name == "payload"]
    assert loads == [(nftables.PAYLOAD_TRANSPORT_HEADER, 2, 2), (nftables.PAYLOAD_TRANSPORT_HEADER, 0, 2),
                     (nftables.PAYLOAD_NETWORK_HEADER, 6, 2)]
    # Each alternative is a rule of its own, the output interface tested in each; no protocol: no meta l4proto.
    parsed = [_expression(e) for e in rules[1][0]]
    assert [name for name, _ in parsed] == ["meta", "cmp", "payload", "cmp"]
    assert bytes(_attributes(parsed[3][1][nftables.CMP_DATA])[nftables.DATA_VALUE]) == (1 << 127).to_bytes(16, "big")


def test_a_handle_chain_in_order_and_what_each_rule_needs():
    handle = netfilter_rules.HandleRules(1, 16384, 0, "divert", "PO", ordinal=2,
                                         kernel_match=lambda version, hook: PacketMatch(
                                             loopback=True if hook == "O" else None,
                                             program=(Instruction(0x06, 0, 0, 1),)) if version == 4 else None)
    inbound = handle.rules("P")
    names = [[_expression(e)[0] for e in rule.expressions] for rule in inbound]
    assert names[0] == ["fib", "cmp", "immediate"]                                  # not for this host: return
    assert names[1] == ["meta", "cmp", "meta", "bitwise", "cmp", "immediate"]       # from lo: return
    assert names[2] == ["meta", "bitwise", "cmp", "counter", "target"]              # no level passed
    assert names[-1] == ["counter", "target"]
    assert netfilter_rules.NEEDS["NFQUEUE"] in inbound[-1].needs
    # The kernel match stands in the base chain's jump: a packet it rejects goes no further.
    [jump] = handle.jumps("O", 4)
    assert [_expression(e)[0] for e in jump.expressions] == ["meta", "cmp", "match", "immediate"]
    assert jump.needs == (netfilter_rules.NEEDS["bpf"],)
    assert handle.jumps("O", 6) == []                                               # no IPv6 packet: no jump
    [every] = netfilter_rules.HandleRules(1, 2, 0, "drop", "I").jumps("I", 6)
    assert [_expression(e)[0] for e in every.expressions] == ["immediate"]
    # A native match of several rules: one jump each, to the same chain.
    native = netfilter_rules.HandleRules(1, 16384, 0, "divert", "I", kernel_match=lambda version, hook: PacketMatch(
        native=(Conjunction(17, ()), Conjunction(51, ()), Conjunction(135, ()))))
    jumps = native.jumps("I", 6)
    assert [[_expression(e)[0] for e in rule.expressions] for rule in jumps] == [["meta", "cmp", "immediate"]] * 3
    assert {rule.what for rule in jumps} == {f"jump to {native.chain('I')}"}
    sniff = netfilter_rules.HandleRules(1, 16385, 0, "sniff", "I")
    assert [_expression(e)[0] for e in sniff.rules("I")[-1].expressions] == ["log"]


def _dumped(attrs: bytes) -> tuple[bytes, int, int]:
    data = netlink.message(nftables.NFNL_SUBSYS_NFTABLES, nftables.NEWRULE, 0, attrs, family=nftables.NFPROTO_IPV4)
    return data, netlink.NLMSGHDR.size, len(data)


def test_a_dumped_rule_gives_its_chain_handle_jump_counter_and_target():
    jump = nftables.new_rule(nftables.NFPROTO_IPV4, "divertgui", "output",
                             [nftables.verdict(nftables.NFT_JUMP, "DG1_2_30001s01O")])
    data, body, end = _dumped(jump.attrs + attribute(nftables.RULE_HANDLE, struct.pack("!Q", 42)))
    assert nftables.parse_rule(data, body, end) == ("divertgui", nftables.DumpedRule("output", 42, "DG1_2_30001s01O",
                                                                                     None))
    counter = nftables.expression("counter", attribute(nftables.COUNTER_BYTES, struct.pack("!Q", 900))
                                   + attribute(nftables.COUNTER_PACKETS, struct.pack("!Q", 7)))
    rule = nftables.new_rule(nftables.NFPROTO_IPV4, "divertgui", "DG1_2_30001s01O",
                             [counter, nftables.nfqueue_target(2, 1, True)])
    data, body, end = _dumped(rule.attrs + attribute(nftables.RULE_HANDLE, struct.pack("!Q", 5)))
    assert nftables.parse_rule(data, body, end)[1] == nftables.DumpedRule("DG1_2_30001s01O", 5, None, 7, "NFQUEUE")
    dropping = netfilter_rules.HandleRules(1, 2, 0, "drop", "O").rules("O")[-1]
    rule = nftables.new_rule(nftables.NFPROTO_IPV4, "divertgui", "DG1_2_30001s01O", list(dropping.expressions))
    data, body, end = _dumped(rule.attrs + attribute(nftables.RULE_HANDLE, struct.pack("!Q", 6)))
    assert nftables.parse_rule(data, body, end)[1] == nftables.DumpedRule("DG1_2_30001s01O", 6, None, 0, "drop")
    back = nftables.new_rule(nftables.NFPROTO_IPV4, "divertgui", "DG1_2_30001s01O",
                             [nftables.verdict(nftables.NFT_RETURN)])
    data, body, end = _dumped(back.attrs + attribute(nftables.RULE_HANDLE, struct.pack("!Q", 8)))
    assert nftables.parse_rule(data, body, end)[1] == nftables.DumpedRule("DG1_2_30001s01O", 8, None, None)


def test_an_interface_name_fills_the_register_and_no_more():
    assert nftables.interface_name("lo") == b"lo" + bytes(14)
    with pytest.raises(ValueError, match="longer than 15"):
        nftables.interface_name("x" * 16)


def test_a_handle_without_fragments_taking_ipv6_needs_the_chain_that_turns_reassembly_on():
    inbound = netfilter_rules.HandleRules(1, 16384, 0, "divert", "IO")
    assert inbound.needs_reassembly(6) and not inbound.needs_reassembly(4)
    # FRAGMENTS (hook P), and a handle whose filter no IPv6 packet passes: no.
    assert not netfilter_rules.HandleRules(1, 16384, 0, "divert", "PO").needs_reassembly(6)
    ipv4_only = netfilter_rules.HandleRules(1, 16384, 0, "sniff", "I",
                                            kernel_match=lambda version, hook: PacketMatch() if version == 4 else None)
    assert not ipv4_only.needs_reassembly(6)
    chain, rule = netfilter_rules.reassembly_changes(nftables.NFPROTO_IPV6)
    assert chain.kind == nftables.NEWCHAIN and rule.kind == nftables.NEWRULE
    assert rule.needs == netfilter_rules.NEEDS["conntrack"]
    assert nftables.conntrack_state() in rule.attrs
    # FRAGMENTS' prerouting chain stands before conntrack's defragmentation (-400).
    assert netfilter_rules.HOOKS["P"][3] < -400 < netfilter_rules.HOOKS["I"][3]
