"""Filters nf_tables' own expressions test, without the bpf match, which
costs the kernel more per packet: a conjunction of header-field comparisons
with constants, or a disjunction of such conjunctions that no packet can
satisfy twice.

    native_match(tree, version) -> NativeMatch | None

Each conjunction is one rule (a `Conjunction`): the transport protocol the
kernel found (meta l4proto), then every field as a big-endian load from
the network or transport header compared with a constant. A protocol's
presence (`udp`, `tcp`, `icmp`, `icmpv6`) is the protocol, a load of its
fewest header bytes (which fails on a shorter packet) and, for TCP, a
header length of at least 20 bytes, as the filter decides it; for IPv4
also a fragment offset of 0 (nf_tables' fast path for loads of 1, 2 or 4
bytes reads a later fragment's bytes where its transport header would be).
The rules must exclude each other (a sniffing handle would copy a packet
twice): they test different protocols, or the same field for different
values.

IPv4 is exact. IPv6: the kernel's transport lookup (ipv6_find_hdr, as
nf_tables calls it) walks hop-by-hop, routing, fragment and destination
options headers as the filter does, but it stops at AH and does not know
the mobility header, where the filter walks on. Packets the kernel finds
one of those in (KERNEL_STOPS) are taken whole by rules of their own, so
the match covers every packet the filter accepts; it is exact only when
no conjunction names a protocol. Wider still: the kernel walks past a
second fragment header, where the filter stops, and for a later fragment
it finds the protocol its fragment header names, with the transport
header at the IPv6 header. (The kernel finds no protocol when the
transport header starts beyond 65535 bytes, which only a packet longer
than any interface's MTU can have.)
"""

from __future__ import annotations

from typing import NamedTuple

from divertgui.engine.header_fields import (
    FILTER_READS, IPPROTO_AH, IPPROTO_MH, IPPROTO_TCP, IPV4, IPV4_FRAGMENT_BITS, TCP, TCP_HEADER_MIN,
    TRANSPORT_HEADER_MIN, TRANSPORT_PROTOCOLS,
)

from .ast import OPS, Node, Or, Test
from .chains import flatten, flatten_and
from .fields import IPV4_MAPPED_LO
from .kernel_fields import compare

NETWORK, TRANSPORT = "network", "transport"
# Disjunctions longer than this stay with the bpf match: each conjunction is a rule every packet meets.
MAX_CONJUNCTIONS = 4
# The extension headers the filter walks past (IPV6_EXTENSION_HEADERS) and ipv6_find_hdr
# (net/ipv6/exthdrs_core.c) does not, as nf_tables calls it: IP6_FH_F_AUTH has it stop at AH, and
# it does not know the mobility header.
KERNEL_STOPS = (IPPROTO_AH, IPPROTO_MH)


class FieldTest(NamedTuple):
    base: str       # NETWORK or TRANSPORT: the header the offset counts from
    offset: int
    size: int       # bytes, read big-endian
    op: str         # one of ast.OPS
    value: int
    mask: int | None = None     # ANDed with the bytes before the comparison


class Conjunction(NamedTuple):
    protocol: int | None            # the transport protocol the kernel found, None: any
    tests: tuple[FieldTest, ...]


class NativeMatch(NamedTuple):
    conjunctions: tuple[Conjunction, ...]   # no packet satisfies two of them
    exact: bool                             # accepts nothing the filter rejects


def _presence(protocol: int, version: int) -> tuple[FieldTest, ...]:
    """What the filter asks of a packet to have this transport header, besides the protocol."""
    if protocol == IPPROTO_TCP:
        # Bytes 12..19 are there (a 20-byte header) and the header length is at least 20 bytes.
        length = TCP["hdr_len"]
        span = TCP_HEADER_MIN - length.offset
        present = (FieldTest(TRANSPORT, length.offset, span, ">=",
                             TCP_HEADER_MIN // 4 << length.shift << 8 * (span - 1)),)
    else:
        last = TRANSPORT_HEADER_MIN[protocol] - 2
        present = (FieldTest(TRANSPORT, last, 2, ">=", 0),)
    if version == 4:
        offset = IPV4["frag_offset"]
        present += (FieldTest(NETWORK, offset.offset, offset.size, "==", 0, offset.mask),)
    return present


def _field_test(test: Test, version: int) -> tuple[str | None, FieldTest] | None:
    """(its header's name if a transport header, the test), or None when no load of one field says it."""
    if test.op not in OPS:
        return None
    if test.field == "fragment" and version == 4:
        return _fragment_test(test)
    read = FILTER_READS.get("ip.Protocol" if test.field == "protocol" and version == 4 else test.field)
    if read is None or read.field is None:
        return None
    field, value = read.field, test.value
    if read.header == "ip" and field.kind == "address":
        value -= IPV4_MAPPED_LO
    if not 0 <= value <= field.mask:
        return None
    # A field of some bits of its bytes is compared in place: masked, with the value shifted to its bits.
    mask = None if field.whole else field.mask << field.shift
    transport = read.header if read.header in TRANSPORT_PROTOCOLS else None
    return transport, FieldTest(TRANSPORT if transport else NETWORK, field.offset, field.size, test.op,
                                value << field.shift, mask)


def _fragment_test(test: Test) -> tuple[None, FieldTest] | None:
    """IPv4's `fragment`: the MF flag or a fragment offset is set."""
    wanted = [value for value in (0, 1) if compare(test.op, value, test.value)]
    if len(wanted) != 1:
        return None
    offset = IPV4["frag_offset"]
    return None, FieldTest(NETWORK, offset.offset, offset.size, "!=" if wanted == [1] else "==", 0,
                           IPV4_FRAGMENT_BITS)


def _conjunction(tree: Node, version: int) -> Conjunction | None:
    headers, tests = set(), []
    for part in flatten_and(tree):
        if not isinstance(part, Test) or part.index is not None:
            return None
        if part.field in TRANSPORT_PROTOCOLS:
            # A presence test: true when the header is there.
            if not compare(part.op, 1, part.value) or compare(part.op, 0, part.value):
                return None
            headers.add(part.field)
            continue
        found = _field_test(part, version)
        if found is None:
            return None
        header, test = found
        if header:
            headers.add(header)
        tests.append(test)
    if len(headers) > 1:
        return None
    if not headers:
        return Conjunction(None, tuple(tests))
    protocol = TRANSPORT_PROTOCOLS[headers.pop()]
    return Conjunction(protocol, (*tests, *_presence(protocol, version)))


def _exclusive(a: Conjunction, b: Conjunction) -> bool:
    """No packet satisfies both: different protocols, or one field equal to different values."""
    if a.protocol is not None and b.protocol is not None and a.protocol != b.protocol:
        return True
    return any(x.op == y.op == "==" and x[:3] == y[:3] and x.mask == y.mask and x.value != y.value
               for x in a.tests for y in b.tests)


def native_match(tree: Node, version: int) -> NativeMatch | None:
    """The rules testing `tree` for one IP version, or None when nf_tables' expressions cannot."""
    disjuncts = flatten(Or, tree)
    if len(disjuncts) > MAX_CONJUNCTIONS:
        return None
    conjunctions = [_conjunction(part, version) for part in disjuncts]
    if None in conjunctions:
        return None
    exact = True
    if version == 6 and any(c.protocol is not None for c in conjunctions):
        conjunctions += [Conjunction(protocol, ()) for protocol in KERNEL_STOPS]
        exact = False
    if not all(_exclusive(a, b) for i, a in enumerate(conjunctions) for b in conjunctions[i + 1:]):
        return None
    return NativeMatch(tuple(conjunctions), exact)
