"""The part of a filter tree the kernel can test, per IP version and hook: a
superset of the filter, and whether it is exact.

Every packet the filter accepts, the approximation accepts. What the kernel
cannot see the way user space sees it becomes "unknown" and counts as true
(the test's header-presence guard is kept):

- address fields (timestamp, ifIdx, loopback; direction unless the hook is
  given) are not in the packet;
- NFQUEUE hands user space GSO/GRO super-packets cut into segments, so the
  fields that differ between a super-packet and its segments (lengths, IP
  id and checksum, TCP sequence, FIN/PSH/URG, window, checksums, payload
  bytes) are unknown; `length >` and `length >=` stay, as supersets only,
  since a super-packet is never shorter than its segments.

`exact` speaks of packets as a netfilter hook holds them: parsable, with an
IP length equal to the bytes present (the kernel trims or drops others).
"""

from __future__ import annotations

from typing import NamedTuple

from .ast import And, Cond, Const, Node, Or, Test
from .fields import FIELDS
from .kernel_fields import TRANSPORT, compare, field_load

TRUE, FALSE = Const(True), Const(False)

# Bytes of the fixed IP header that are the same in a super-packet and in its segments.
_STABLE_BYTES = {4: set(range(0, 2)) | set(range(6, 10)) | set(range(12, 20)),
                 6: set(range(0, 4)) | set(range(6, 40))}
# Fields whose value user space gets from a segment, not from what the rule saw.
_UNKNOWN = frozenset({
    "timestamp", "random8", "random16", "random32", "ifIdx",
    "ip.Length", "ip.Id", "ip.Checksum", "ipv6.Length", "icmp.Checksum", "icmpv6.Checksum",
    "tcp.SeqNum", "tcp.Urg", "tcp.Psh", "tcp.Fin", "tcp.Window", "tcp.Checksum", "tcp.UrgPtr",
    "tcp.PayloadLength", "udp.Length", "udp.Checksum", "udp.PayloadLength",
    "tcp.Payload", "tcp.Payload16", "tcp.Payload32", "udp.Payload", "udp.Payload16", "udp.Payload32",
})
_PORTS = {"localPort", "remotePort"}
_ADDRESSES = {"localAddr", "remoteAddr"}


class _Context(NamedTuple):
    version: int
    hook: str | None      # "I", "O", "P", "F" or None when one match serves several hooks


def _presence(field: str, version: int) -> Node:
    """The test `field != 0` for a presence field, folded for the version."""
    if field == "ip":
        return TRUE if version == 4 else FALSE
    if field == "ipv6":
        return TRUE if version == 6 else FALSE
    if (field == "icmp" and version == 6) or (field == "icmpv6" and version == 4):
        return FALSE
    return Test(field, "!=", 0)


def _guard(field: str, version: int) -> Node:
    guard = FIELDS[field].guard if field in FIELDS else None
    return TRUE if guard is None else _presence(guard, version)


def _constant(field: str, ctx: _Context) -> int | None:
    if field in ("zero", "event", "subIfIdx"):
        return 0
    if field in ("ip", "ipv6"):
        return int((field == "ipv6") == (ctx.version == 6))
    if (field == "icmp" and ctx.version == 6) or (field == "icmpv6" and ctx.version == 4):
        return 0
    if ctx.hook is not None and field in ("outbound", "inbound"):
        return int((ctx.hook == "O") == (field == "outbound"))
    if ctx.hook in ("I", "P") and field == "loopback":
        return 0  # loopback packets are diverted on the outbound path only
    return None


def _approximate_test(node: Test, ctx: _Context) -> tuple[Node, bool]:
    field, version = node.field, ctx.version
    guard = _guard(field, version)
    if guard == FALSE:
        return FALSE, True
    constant = _constant(field, ctx)
    if constant is not None:
        return (TRUE if compare(node.op, constant, node.value) else FALSE), True
    if field in _ADDRESSES or field in _PORTS:
        return _endpoint(node, ctx)
    if node.index is not None:
        return _index(node, ctx)
    if field == "length":
        # Sound as a superset only: a short last segment of a long super-packet
        # passes the kernel's test and fails the exact one.
        return (node if node.op in (">", ">=") else guard), False
    if field in _UNKNOWN or field in ("outbound", "inbound", "loopback"):
        return guard, False
    if field in TRANSPORT or field in ("impostor", "fragment", "ipv6.SrcAddr", "ipv6.DstAddr") \
            or field_load(field, version) is not None:
        return node, True
    return guard, False


def _endpoint(node: Test, ctx: _Context) -> tuple[Node, bool]:
    """localAddr/Port and remoteAddr/Port: source or destination by direction."""
    is_port = node.field in _PORTS
    local = node.field.startswith("local")
    if ctx.version == 4:
        src, dst = ("_sport", "_dport") if is_port else ("ip.SrcAddr", "ip.DstAddr")
    else:
        src, dst = ("_sport", "_dport") if is_port else ("ipv6.SrcAddr", "ipv6.DstAddr")
    source, destination = Test(src, node.op, node.value), Test(dst, node.op, node.value)
    if ctx.hook == "O":
        return (source if local else destination), True
    if ctx.hook in ("I", "P"):
        return (destination if local else source), True
    return Or(source, destination), False


def _index(node: Test, ctx: _Context) -> tuple[Node, bool]:
    guard = _guard(node.field, ctx.version)
    size = FIELDS[node.field].index_size
    if node.field.startswith("packet") and node.index >= 0 and \
            set(range(node.index, node.index + size)) <= _STABLE_BYTES[ctx.version]:
        return node, True
    return guard, False


def _simplify(node: Node) -> Node:
    if isinstance(node, And):
        if FALSE in (node.left, node.right):
            return FALSE
        if node.left == TRUE:
            return node.right
        return node.left if node.right == TRUE else node
    if isinstance(node, Or):
        if TRUE in (node.left, node.right):
            return TRUE
        if node.left == FALSE:
            return node.right
        return node.left if node.right == FALSE else node
    if isinstance(node, Cond):
        if isinstance(node.test, Const):
            return node.then if node.test.value else node.otherwise
        if node.then == node.otherwise:
            return node.then
    return node


def approximate(tree: Node, version: int, hook: str | None = None, depth: int | None = None) -> tuple[Node, bool]:
    """(tree over what the kernel can test, exact). The result accepts every
    packet of `version` that `tree` accepts; exact when it accepts no other.
    Subtrees deeper than `depth` become unknown (true)."""
    ctx = _Context(version, hook)

    def visit(node: Node, level: int) -> tuple[Node, bool]:
        if depth is not None and level > depth and not isinstance(node, Const):
            return TRUE, False
        if isinstance(node, Const):
            return node, True
        if isinstance(node, Test):
            return _approximate_test(node, ctx)
        if isinstance(node, (And, Or)):
            left, left_exact = visit(node.left, level + 1)
            if isinstance(node, And) and left == FALSE and left_exact:
                return FALSE, True
            if isinstance(node, Or) and left == TRUE and left_exact:
                return TRUE, True
            right, right_exact = visit(node.right, level + 1)
            return _simplify(type(node)(left, right)), left_exact and right_exact
        test, test_exact = visit(node.test, level + 1)
        then, then_exact = visit(node.then, level + 1)
        otherwise, otherwise_exact = visit(node.otherwise, level + 1)
        if not test_exact:
            # A superset of the test says nothing of its negation: either branch may run.
            return _simplify(Or(then, otherwise)), False
        return _simplify(Cond(test, then, otherwise)), then_exact and otherwise_exact

    return _iterative_guard(visit, tree)


def _iterative_guard(visit, tree):
    try:
        return visit(tree, 0)
    except RecursionError:
        return TRUE, False
