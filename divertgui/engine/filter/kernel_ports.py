"""Filters nf_tables' own expressions test exactly, without the bpf match:
a conjunction of `udp` or `tcp` and that protocol's port fields compared
with a constant.

    port_match(tree) -> PortMatch | None

The rule tests the transport protocol (meta l4proto), that the packet is
no later fragment (a test of a port field is false there), and each port
of the transport header (payload at the transport base). IPv4 only:
for IPv6 the kernel walks fewer extension headers than the filter does
(not the mobility header, for one), so it would miss packets the filter
accepts; IPv6 keeps the bpf match, which accepts such packets whole.
"""

from __future__ import annotations

from typing import NamedTuple

from divertgui.engine.header_fields import FILTER_READS, IPPROTO_TCP, IPPROTO_UDP

from .ast import Node, Test
from .chains import flatten_and
from .kernel_fields import compare

PROTOCOLS = {"udp": IPPROTO_UDP, "tcp": IPPROTO_TCP}
PORT_FIELDS = ("SrcPort", "DstPort")
OPERATORS = ("==", "!=", "<", "<=", ">", ">=")


class PortTest(NamedTuple):
    offset: int     # of the 16-bit port in the transport header
    op: str         # one of OPERATORS
    value: int      # 0..65535


class PortMatch(NamedTuple):
    protocol: int                   # IPPROTO_UDP or IPPROTO_TCP
    tests: tuple[PortTest, ...]     # at least one


def port_match(tree: Node) -> PortMatch | None:
    """The PortMatch testing exactly what `tree` does, or None when it is not such a conjunction."""
    protocols, tests = set(), []
    for part in flatten_and(tree):
        if not isinstance(part, Test) or part.index is not None:
            return None
        header, _, field = part.field.partition(".")
        if header not in PROTOCOLS:
            return None
        protocols.add(header)
        if not field:
            # `udp` alone is a test of the protocol, true when the header is present.
            if not compare(part.op, 1, part.value) or compare(part.op, 0, part.value):
                return None
        elif field in PORT_FIELDS and part.op in OPERATORS and 0 <= part.value <= 0xFFFF:
            tests.append(PortTest(FILTER_READS[part.field].field.offset, part.op, part.value))
        else:
            return None
    if len(protocols) != 1 or not tests:
        return None
    return PortMatch(PROTOCOLS[protocols.pop()], tuple(tests))
