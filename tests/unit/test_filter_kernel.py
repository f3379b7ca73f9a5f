"""The kernel prefilter is a superset of the filter, and exact where it says so.

The BPF programs are run here by a small classic-BPF interpreter with the
kernel's rules (out-of-bounds loads end the program with 0), native rules by
tests/nft_model.py, on packets from tests/packet_gen.py.
"""

from __future__ import annotations

import random
import socket
import struct

import pytest

from divertgui.engine.address import Address
from divertgui.engine.filter import compile_filter, parse_filter
from divertgui.engine.filter import bpf, kernel, kernel_approximation
from divertgui.engine.headers import parse_headers
from divertgui.engine.filter.bpf import Instruction
from divertgui.engine.filter.kernel_native import (KERNEL_STOPS, NETWORK, TRANSPORT, Conjunction, FieldTest,
                                                   native_match)
from divertgui.engine.filter.kernel import (MAX_INSTRUCTIONS, PacketMatch, kernel_exactness, kernel_match_for,
                                            kernel_test, translate)
from divertgui.engine.filter.kernel_fields import INJECTED_MARK
from tests import nft_model, packet_gen


def run_bpf(program, raw: bytes, mark: int = 0) -> int:
    """Classic BPF as the kernel runs it on an skb whose data starts at the IP header."""
    a = x = 0
    memory = [0] * 16
    pc = 0
    n = len(raw)

    def load(offset: int, size: int):
        if offset < 0 or offset + size > n:
            return None
        return int.from_bytes(raw[offset:offset + size], "big")

    for _ in range(4096):
        code, jt, jf, k = program[pc]
        cls = code & 0x07
        pc += 1
        if cls in (bpf.LD, bpf.LDX):
            mode, size = code & 0xE0, {bpf.W: 4, bpf.H: 2, bpf.B: 1}[code & 0x18]
            if mode == bpf.IMM:
                value = k
            elif mode == bpf.LEN:
                value = n
            elif mode == bpf.MEM:
                value = memory[k]
            elif mode == bpf.MSH:
                byte = load(k, 1)
                if byte is None:
                    return 0
                value = (byte & 0x0F) * 4
            elif mode == bpf.ABS and k == bpf.SKF_AD_MARK:
                value = mark
            else:
                value = load(k + (x if mode == bpf.IND else 0), size)
                if value is None:
                    return 0
            if cls == bpf.LD:
                a = value
            else:
                x = value
        elif cls == bpf.ST:
            memory[k] = a
        elif cls == bpf.ALU:
            operand = x if code & bpf.X else k
            op = code & 0xF0
            # Only the operation asked is computed: a shift by a large X would build a huge number.
            a = {bpf.ADD: int.__add__, bpf.SUB: int.__sub__, bpf.AND_: int.__and__, bpf.OR: int.__or__,
                 bpf.LSH: int.__lshift__, bpf.RSH: int.__rshift__}[op](a, operand) & 0xFFFFFFFF
        elif cls == bpf.JMP:
            op = code & 0xF0
            if op == bpf.JA:
                pc += k
                continue
            operand = x if code & bpf.X else k
            taken = {bpf.JEQ: a == operand, bpf.JGT: a > operand, bpf.JGE: a >= operand,
                     bpf.JSET: bool(a & operand)}[op]
            pc += jt if taken else jf
        elif cls == bpf.RET:
            return k
        elif cls == bpf.MISC:
            if code & 0xF8 == bpf.TXA:
                a = x
            else:
                x = a
        else:
            raise AssertionError(f"unknown opcode {code:#x}")
    raise AssertionError("program did not end")


def kernel_accepts(filter_text: str, raw: bytes, address: Address, hook=None) -> bool:
    """What the handle's rules (the output interface, then the native rules or the BPF program) say
    of this packet."""
    version = 6 if address.ipv6 else 4
    tree, loopback = parse_filter(filter_text), None
    if hook == "O":
        tree, loopback = kernel._take_loopback(tree)
    if loopback is not None and loopback != bool(address.loopback):
        return False
    match = kernel_test(tree, version, hook, use_bpf=True).match
    if match is None:
        return False
    if match.native is not None:
        return nft_model.accepts(match.native, raw)
    if match.program is None:
        return True
    return run_bpf(match.program, raw, INJECTED_MARK if address.impostor else 0) != 0


def _packets(seed: int, count: int):
    rng = random.Random(seed)
    for _ in range(count):
        raw = packet_gen.packet(rng)
        yield raw, packet_gen.address_for(rng, raw)


def _check_superset(text: str, packets, hook=None) -> int:
    """Asserts the superset property; returns how many packets the filter accepted."""
    compiled = compile_filter(text)
    exactness = {v: kernel_test(compiled.tree, v, hook, use_bpf=True).exact for v in (4, 6)}
    accepted = 0
    for raw, address in packets:
        if hook == "O" and not address.outbound or hook == "I" and address.outbound:
            continue
        exact = compiled.match(raw, address)
        if not raw or raw[0] >> 4 not in (4, 6):
            continue
        in_kernel = kernel_accepts(text, raw, address, hook)
        if exact:
            accepted += 1
            assert in_kernel, f"{text!r} accepts {raw.hex()} ({address}) but the kernel program rejects it"
        elif exactness[6 if address.ipv6 else 4] and _kernel_shaped(raw):
            assert not in_kernel, f"{text!r} is called exact but the kernel accepts {raw.hex()} ({address})"
    return accepted


def _kernel_shaped(raw: bytes) -> bool:
    """A packet as a netfilter hook can hold it: parsable, its IP length that of the buffer."""
    layout = parse_headers(raw)
    if layout is None:
        return False
    declared = int.from_bytes(raw[2:4], "big") if layout.version == 4 else int.from_bytes(raw[4:6], "big") + 40
    return declared == len(raw)


HAND_PICKED = [
    "tcp.DstPort == 80", "tcp.DstPort == 80 or tcp.SrcPort == 80", "udp and udp.DstPort >= 1000",
    "tcp.DstPort == 8080 or tcp.SrcPort == 8080 or udp.DstPort == 8080 or udp.SrcPort == 8080",
    "ip.DstAddr == 10.0.0.1 or ip.SrcAddr == 10.0.0.1", "ipv6.SrcAddr > 2001:db8:: and ipv6.SrcAddr <= 2001:db8::1",
    "ipv6.DstAddr != ::1", "icmp.Type == 8", "icmpv6.Type == 128 and icmpv6.Body > 5", "fragment",
    "not fragment and tcp", "tcp.Syn and not tcp.Ack", "localPort == 53", "remotePort < 1024 and tcp",
    "localAddr == 10.0.0.1", "remoteAddr == fe80::1", "protocol == 17", "ip.TTL < 64 or ipv6.HopLimit < 64",
    "length > 100", "length <= 100 and udp", "impostor", "not impostor and udp", "packet[9] == 6",
    "packet16[0] == 0x4500", "packet32[-1] == 0", "tcp.Payload[0] == 0x47", "(tcp ? tcp.DstPort == 80 : udp)",
    "(outbound ? tcp : udp)", "outbound and udp", "loopback", "ifIdx == 2 and tcp", "ip.FragOff > 0",
    "ip.HdrLength > 5", "ip.TOS == 0 and ip.DF", "ipv6.FlowLabel == 0 or ipv6.TrafficClass > 3",
    "tcp.HdrLength > 5", "tcp.AckNum == 0", "random8 < 10", "ip.SrcAddr < 127.0.0.1", "udp.SrcPort == 53",
    "tcp.DstPort < 0", "icmp and icmp.Code != 0", "ipv6 and protocol == 58", "timestamp > 5 or tcp.Rst",
]


@pytest.mark.parametrize("text", HAND_PICKED)
def test_hand_picked_filters_are_supersets(text):
    _check_superset(text, _packets(hash(text) & 0xFFFF, 600))


def test_generated_filters_are_supersets_on_thousands_of_packets():
    rng = random.Random(20261126)
    packets = list(_packets(7, 400))
    accepted = 0
    for _ in range(120):
        text = packet_gen.filter_text(rng)
        accepted += _check_superset(text, packets)
    assert accepted > 1000  # the property was exercised on many accepted packets


@pytest.mark.parametrize("hook", ["I", "O"])
def test_direction_is_exact_for_one_hook(hook):
    for text in ("outbound and udp", "inbound and tcp.DstPort == 80", "localPort == 53", "remoteAddr == 10.0.0.1",
                 "(outbound ? tcp : udp)", "outbound and loopback", "udp and not loopback and ip"):
        _check_superset(text, _packets(11, 500), hook)
        assert kernel_test(text, 4, hook, use_bpf=True).exact, text
    assert not kernel_test("loopback or udp", 4, "O", use_bpf=True).exact
    _check_superset("loopback or udp", _packets(12, 500), hook)


def test_versions_that_cannot_match_get_no_rule():
    assert kernel_test("ipv6 and tcp", 4, use_bpf=True).match is None
    assert kernel_test("ip.SrcAddr == 10.0.0.1", 6, use_bpf=True).match is None
    assert kernel_test("ip", 4, use_bpf=True) == (PacketMatch(), True)
    assert kernel_test("true", 6, use_bpf=True) == (PacketMatch(), True)


def test_exactness_per_version():
    assert kernel_exactness("tcp.DstPort == 80") == {4: True, 6: False}  # IPv6 extension headers
    assert kernel_exactness("ip.TTL == 3 or ipv6.HopLimit == 3") == {4: True, 6: True}
    assert kernel_exactness("timestamp > 0") == {4: False, 6: False}
    assert kernel_exactness("outbound and loopback") == {4: True, 6: True}
    assert kernel_exactness("udp and length > 100") == {4: False, 6: False}  # GSO segments


def test_loopback_at_the_output_hook_is_an_interface_match():
    assert kernel_test("outbound and loopback", 4, "O", use_bpf=True) == (PacketMatch(loopback=True), True)
    assert kernel_test("outbound and loopback", 4, "I", use_bpf=True) == (None, True)
    match, exact = kernel_test("udp and not loopback", 6, "O", use_bpf=True)
    assert match.loopback is False and match.native
    match, exact = kernel_test("(udp.DstPort == 1 or udp.SrcPort == 1) and not loopback", 6, "O", use_bpf=True)
    assert match.loopback is False and match.program
    assert kernel_test("loopback and not loopback", 4, "O", use_bpf=True) == (None, True)


def test_the_match_is_a_bpf_program_that_fits_the_bpf_match():
    text = "udp.DstPort == 53 or udp.SrcPort == 53"
    match = kernel_match_for(text)(4, "I")
    assert match.loopback is None and match.native is None
    assert 0 < len(match.program) <= MAX_INSTRUCTIONS
    assert all(isinstance(i, Instruction) for i in match.program)
    assert match.program == tuple(translate(parse_filter(text), 4, "I").program)


UDP_HEADER = FieldTest(TRANSPORT, 6, 2, ">=", 0)        # the last bytes of a UDP or ICMP header are there
TCP_HEADER = FieldTest(TRANSPORT, 12, 8, ">=", 0x50 << 56)  # 20 bytes, and a header length of 20 or more
NOT_LATER_FRAGMENT = FieldTest(NETWORK, 6, 2, "==", 0, 0x1FFF)


def _port(offset, op, value):
    return FieldTest(TRANSPORT, offset, 2, op, value)


@pytest.mark.parametrize("text, conjunctions", [
    ("udp.DstPort == 53", [(17, [_port(2, "==", 53), UDP_HEADER])]),
    ("tcp and tcp.SrcPort != 22 and tcp.DstPort >= 1024",
     [(6, [_port(0, "!=", 22), _port(2, ">=", 1024), TCP_HEADER])]),
    ("inbound and udp and udp.DstPort < 100 and udp.DstPort > 10",
     [(17, [_port(2, "<", 100), _port(2, ">", 10), UDP_HEADER])]),
    ("not udp.DstPort == 53", [(17, [_port(2, "!=", 53), UDP_HEADER])]),
    ("udp", [(17, [UDP_HEADER])]),
    ("tcp.DstPort == 80 or udp.DstPort == 53 or udp", None),      # udp twice: not exclusive
    ("tcp.DstPort == 80 or tcp.DstPort == 443 or udp.DstPort == 53",
     [(6, [_port(2, "==", 80), TCP_HEADER]), (6, [_port(2, "==", 443), TCP_HEADER]),
      (17, [_port(2, "==", 53), UDP_HEADER])]),
])
def test_protocol_and_field_conjunctions_are_native_rules(text, conjunctions):
    expected = None if conjunctions is None else \
        tuple(Conjunction(protocol, tuple(tests) + (NOT_LATER_FRAGMENT,)) for protocol, tests in conjunctions)
    ipv4 = kernel_test(text, 4, "I")
    assert ipv4.match.native == expected
    assert ipv4.exact and (ipv4.match.program is None) == (expected is not None)
    # IPv6: the same rules, and packets the kernel finds AH or a mobility header in are taken whole.
    ipv6 = kernel_test(text, 6, "I", use_bpf=True)
    if conjunctions is not None:
        assert ipv6.match.native == tuple(Conjunction(protocol, tuple(tests)) for protocol, tests in conjunctions) \
            + tuple(Conjunction(protocol, ()) for protocol in KERNEL_STOPS)
        assert not ipv6.exact and ipv6.match.program is None


def test_the_kernel_stops_at_ah_and_does_not_know_the_mobility_header():
    assert KERNEL_STOPS == (51, 135)


def test_icmp_for_ipv4_and_icmpv6_for_ipv6():
    assert kernel_test("icmp.Type == 8", 4, "I").match.native == (
        Conjunction(1, (FieldTest(TRANSPORT, 0, 1, "==", 8), UDP_HEADER, NOT_LATER_FRAGMENT)),)
    assert kernel_test("icmpv6", 6, "I").match.native[0] == Conjunction(58, (UDP_HEADER,))
    assert kernel_test("icmp", 6, "I").match is None


def test_what_the_approximation_widens_stays_inexact_in_native_rules():
    test = kernel_test("udp.Length > 8 and udp.DstPort == 53", 4, "I")
    assert test.match.native == (Conjunction(17, (_port(2, "==", 53), UDP_HEADER, NOT_LATER_FRAGMENT)),)
    assert not test.exact


@pytest.mark.parametrize("text, version, tests", [
    ("ip.DstAddr == 10.0.0.1", 4, [(16, 4, "==", 0x0A000001)]),
    ("ip.SrcAddr >= 10.0.0.0 and ip.SrcAddr <= 10.255.255.255", 4, [(12, 4, ">=", 0x0A000000),
                                                                    (12, 4, "<=", 0x0AFFFFFF)]),
    ("ipv6.SrcAddr == 2001:db8::1", 6, [(8, 16, "==", 0x20010DB8 << 96 | 1)]),
    ("ipv6 and ipv6.DstAddr != ::1 and ipv6.HopLimit > 1", 6, [(24, 16, "!=", 1), (7, 1, ">", 1)]),
    ("ip.TTL < 64", 4, [(8, 1, "<", 64)]),
])
def test_ip_header_tests_are_exact_native_rules_for_both_versions(text, version, tests):
    test = kernel_test(text, version, "O")
    assert test.exact and test.match.program is None
    assert test.match.native == (Conjunction(None, tuple(FieldTest(NETWORK, *t) for t in tests)),)


def test_address_alternatives_exclude_each_other_by_value():
    match = kernel_test("ip.DstAddr == 10.0.0.1 or ip.DstAddr == 10.0.0.2", 4, "I").match
    assert [c.tests[0].value for c in match.native] == [0x0A000001, 0x0A000002]
    # Overlapping alternatives would have a sniffing handle copy a packet twice: the bpf match takes them.
    assert kernel_test("ip.DstAddr == 10.0.0.1 or ip.TTL == 3", 4, "I", use_bpf=True).match.native is None
    # In IPv6 an address test would overlap the rules that take AH and mobility-header packets whole.
    assert kernel_test("udp or ipv6.SrcAddr == ::1", 6, "I", use_bpf=True).match.native is None


@pytest.mark.parametrize("text, versions", [
    ("udp.DstPort == 53 or udp.SrcPort == 53", (4, 6)), ("udp.DstPort == 70000 and tcp", (4, 6)),
    ("(tcp ? tcp.DstPort == 1 : udp)", (4, 6)), ("ipv6.FlowLabel > 5", (6,)), ("packet[9] == 6", (4, 6)),
    (" or ".join(f"tcp.DstPort == {port}" for port in range(1, 10)), (4, 6)),
    # IPv6's fragment header and final protocol are the filter's walk, which the kernel's differs from.
    ("fragment and udp", (6,)), ("protocol == 17", (6,)),
])
def test_other_filters_are_no_native_rules(text, versions):
    for version in versions:
        approximated, _ = kernel_approximation.approximate(parse_filter(text), version, "I")
        assert native_match(approximated, version) is None, (text, version)


@pytest.mark.parametrize("text, version, tests", [
    ("ip.HdrLength > 5", 4, [(NETWORK, 0, 1, ">", 5, 0x0F)]),
    ("ipv6.TrafficClass > 3", 6, [(NETWORK, 0, 2, ">", 3 << 4, 0xFF << 4)]),
    ("fragment", 4, [(NETWORK, 6, 2, "!=", 0, 0x3FFF)]),
    ("not fragment", 4, [(NETWORK, 6, 2, "==", 0, 0x3FFF)]),
    ("protocol == 17", 4, [(NETWORK, 9, 1, "==", 17, None)]),
    ("ip.DF and ip.FragOff == 0", 4, [(NETWORK, 6, 1, "!=", 0, 0x40), (NETWORK, 6, 2, "==", 0, 0x1FFF)]),
])
def test_fields_of_some_bits_are_masked_and_compared_in_place(text, version, tests):
    test = kernel_test(text, version, "I")
    assert test.exact and test.match.native == (Conjunction(None, tuple(FieldTest(*t) for t in tests)),)


def test_tcp_flags_are_native_rules():
    [syn] = kernel_test("tcp.Syn and not tcp.Ack", 4, "I").match.native
    assert syn.protocol == 6
    assert syn.tests[:2] == (FieldTest(TRANSPORT, 13, 1, "!=", 0, 0x02), FieldTest(TRANSPORT, 13, 1, "==", 0, 0x10))


def test_long_filters_are_cut_to_fit_and_stay_supersets():
    text = " or ".join(f"(tcp.DstPort == {p} and ip.SrcAddr == 10.0.0.{p % 250})" for p in range(1, 40))
    translation = translate(parse_filter(text), 4)
    assert translation.program is None or len(translation.program) <= MAX_INSTRUCTIONS
    assert not translation.exact
    _check_superset(text, _packets(5, 300))
    deep = "tcp and " * 60 + "udp.DstPort == 5"
    assert not kernel_test(deep, 4, use_bpf=True).exact or kernel_test(deep, 4, use_bpf=True).match is None


def test_without_xt_bpf_what_needs_it_goes_to_user_space():
    assert kernel_test("udp.DstPort == 1 or udp.SrcPort == 1", 4, use_bpf=False) == (PacketMatch(), False)
    assert kernel_test("tcp.DstPort == 80", 4, use_bpf=False).match.native is not None
    assert kernel_test("ipv6", 4, use_bpf=False) == (None, True)


def test_flow_label_is_tested_in_the_kernel_as_windivert_reads_it(reference):
    # dll/windivert_shared.c compares ntohl(WINDIVERT_IPV6HDR_GET_FLOWLABEL(hdr)): the label's
    # low 16 bits are bits 31..16 and its high 4 bits are bits 11..8.
    rng = random.Random(20)
    tcp = struct.pack("!HHIIBBHHH", 1234, 80, 1, 2, 5 << 4, 0x18, 1000, 0, 0)
    small = [rng.randrange(16) << 16 | rng.randrange(16) for _ in range(8)]   # values below 0x100000
    words = [1 << bit for bit in range(28)] + [0xFFFFFFF ^ 1 << bit for bit in range(28)]
    words += small + [rng.getrandbits(28) for _ in range(100)]
    packets = [struct.pack("!IHBB16s16s", 6 << 28 | word, len(tcp), 6, 64, bytes(15) + b"\1", bytes(15) + b"\2")
               + tcp for word in words]
    address = Address(ipv6=True, outbound=True)
    constants = {0, 1, 0xF00, 0x10000, 0xF0F00, 0xFFFFF} | {(w & 0xFFFF) << 16 | (w >> 16 & 0xF) << 8 for w in small}
    for constant in constants:
        for op in ("==", "!=", "<", ">=", ">"):
            text = f"ipv6.FlowLabel {op} {constant}"
            assert kernel_test(text, 6, use_bpf=True).exact, text
            # The transport tests around the flow label check that its load keeps X, the TCP offset.
            for tested in (text, f"tcp.DstPort == 80 and {text} and tcp.SrcPort == 1234"):
                translation = translate(compile_filter(tested).tree, 6)
                for raw in packets:
                    in_kernel = translation.tree.value if translation.program is None \
                        else run_bpf(translation.program, raw) != 0
                    assert in_kernel is reference.eval(tested, raw, address), (tested, raw[:4].hex())


def ipv6_udp(chain: list[int], port: int = 53, fragment_offset: int = 0, source: str = "::1",
             destination: str = "::1") -> bytes:
    """An IPv6 packet: the extension headers `chain` (protocol numbers), then UDP to `port`; fragment
    headers carry `fragment_offset`."""
    data = struct.pack("!HHHH", 40000, port, 12, 0) + b"data"
    following = 17
    for kind in reversed(chain):
        if kind == 44:
            header = struct.pack("!BBHI", following, 0, fragment_offset << 3, 7)
        elif kind == 51:
            header = bytes([following, 1]) + bytes(10)        # (1 + 2) * 4 bytes
        else:
            header = bytes([following, 0]) + bytes(6)         # (0 + 1) * 8 bytes
        data, following = header + data, kind
    addresses = socket.inet_pton(socket.AF_INET6, source) + socket.inet_pton(socket.AF_INET6, destination)
    return struct.pack("!IHBB", 6 << 28, len(data), following, 64) + addresses + data


# (extension headers, fragment offset, destination port): does the filter "udp.DstPort == 53" accept
# the packet, and which native rule takes it (0: the port rule, 1: AH whole, 2: mobility header whole).
EXTENSION_CASES = [
    ([], 0, 53, True, 0), ([0], 0, 53, True, 0), ([43], 0, 53, True, 0), ([60], 0, 53, True, 0),
    ([0, 43, 60], 0, 53, True, 0), ([44], 0, 53, True, 0), ([0, 44, 60], 0, 53, True, 0),
    ([135], 0, 53, True, 2), ([0, 135], 0, 53, True, 2), ([51], 0, 53, True, 1), ([44, 60, 51], 0, 53, True, 1),
    ([51, 135], 0, 53, True, 1),
    ([44], 100, 53, False, None),       # a later fragment: the kernel reads its IPv6 header as the ports
    ([], 0, 54, False, None), ([60], 0, 54, False, None),
    ([51], 0, 54, False, 1),            # taken whole, the filter rejects it in user space
    ([44, 44], 0, 53, False, 0),        # the filter stops at a second fragment header, the kernel walks on
]


@pytest.mark.parametrize("chain, offset, port, wanted, rule", EXTENSION_CASES)
def test_ipv6_native_rules_take_every_packet_the_filter_wants_behind_extension_headers(chain, offset, port,
                                                                                       wanted, rule):
    raw = ipv6_udp(chain, port, offset)
    text = "udp.DstPort == 53"
    assert compile_filter(text).match(raw, Address(ipv6=True, outbound=True, loopback=True)) == wanted
    native = kernel_test(text, 6, "O").match.native
    met = [index for index, conjunction in enumerate(native) if nft_model.conjunction_accepts(conjunction, raw)]
    assert met == ([] if rule is None else [rule])
