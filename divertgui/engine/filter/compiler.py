"""A folded syntax tree to one Python function over raw bytes.

The function is generated as source once per filter. IP header fields are
read at fixed offsets; the transport header is located only when a test
needs it, by an inline copy of parse_headers' rules (IPv6 extension headers
included); tests that need no transport header run first. No per-packet
object is built.
"""

from __future__ import annotations

from .. import headers
from ..header_fields import (
    FILTER_READS, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, IPV4, IPV4_HEADER_LEN, IPV6,
    IPV6_HEADER_LEN, TCP, TCP_HEADER_MIN,
    TRANSPORT_HEADER_MIN, TRANSPORT_PROTOCOLS, UDP_HEADER_LEN, FilterRead, HeaderField, field_expression,
)
from ..packet_hash import layout_hash
from .ast import And, Cond, Const, Node, Or, Test, walk
from .chains import flatten
from ..address import Layer
from ..address_text import IPV4_MAPPED
from .fields import FIELDS, NETWORK_LAYERS, effective_value


def _read_expression(read: FilterRead, base: str) -> str:
    """Python for a filter field read from the header at `base` (an expression)."""
    parts = [field_expression(field, base) + (f" << {position}" if position else "")
             for field, position in read.pieces]
    return parts[0] if len(parts) == 1 else f"({' | '.join(parts)})"


_HEADER_BASE = {"ip": "0", "ipv6": "0", "tcp": "t", "udp": "t", "icmp": "t", "icmpv6": "t"}
_HEADER_GUARD = {"ip": "V == 4", "ipv6": "V == 6", **{name: f"T == {number}"
                                                     for name, number in TRANSPORT_PROTOCOLS.items()}}
_READS = {name: _read_expression(read, _HEADER_BASE[read.header]) for name, read in FILTER_READS.items()}
_READS["ip.SrcAddr"] = f"({IPV4_MAPPED} | {_READS['ip.SrcAddr']})"
_READS["ip.DstAddr"] = f"({IPV4_MAPPED} | {_READS['ip.DstAddr']})"
_READS["tcp.PayloadLength"] = _READS["udp.PayloadLength"] = "pl"
_ADDRESS = {
    "zero": "0",
    "timestamp": "a.timestamp",
    "event": "a.event",
    "outbound": "(1 if a.outbound else 0)",
    "inbound": "(0 if a.outbound else 1)",
    "ifIdx": "a.if_idx",
    "subIfIdx": "a.sub_if_idx",
    "loopback": "(1 if a.loopback else 0)",
    "impostor": "(1 if a.impostor else 0)",
    "length": "n",
}
_SRC = f"({_READS['ipv6.SrcAddr']} if V == 6 else {_READS['ip.SrcAddr']})"
_DST = f"({_READS['ipv6.DstAddr']} if V == 6 else {_READS['ip.DstAddr']})"
# ICMP and ICMPv6 carry their type as the source "port" and 0 as the destination.
_PORTS = f"T == {IPPROTO_TCP} or T == {IPPROTO_UDP}"
_SPORT = f"({_READS['tcp.SrcPort']} if {_PORTS} else {_READS['icmp.Type']} if T else 0)"
_DPORT = f"({_READS['tcp.DstPort']} if {_PORTS} else 0)"
_OTHER = {
    "fragment": "(1 if Fr else 0)",
    "protocol": "P",
    "localAddr": f"({_SRC} if a.outbound else {_DST})",
    "remoteAddr": f"({_DST} if a.outbound else {_SRC})",
    "localPort": f"({_SPORT} if a.outbound else {_DPORT})",
    "remotePort": f"({_DPORT} if a.outbound else {_SPORT})",
    **{header: f"(1 if {guard} else 0)" for header, guard in _HEADER_GUARD.items()},
    "random8": "(H >> 48 & 0xFF)",
    "random16": "(H >> 32 & 0xFFFF)",
    "random32": "(H & 0xFFFFFFFF)",
}
_INDEX_BASE = {"packet": ("0", "n"), "tcp": ("po", "pl"),
               "udp": ("po", "pl")}


# FLOW and SOCKET events: `d` is the address's EndpointData. As in the
# reference, `ip` and `ipv6` read the (absent) packet's IP header at these
# layers and are always 0; `icmp` and `icmpv6` follow the address's IPv6 bit.
_ENDPOINT = {
    "zero": "0",
    "timestamp": "a.timestamp",
    "event": "a.event",
    "outbound": "(1 if a.outbound else 0)",
    "inbound": "(0 if a.outbound else 1)",
    "loopback": "(1 if a.loopback else 0)",
    "ip": "0",
    "ipv6": "0",
    "icmp": "(0 if a.ipv6 or d.protocol != 1 else 1)",
    "icmpv6": "(1 if a.ipv6 and d.protocol == 58 else 0)",
    "tcp": "(1 if d.protocol == 6 else 0)",
    "udp": "(1 if d.protocol == 17 else 0)",
    "protocol": "d.protocol",
    "localAddr": "d.local_addr",
    "remoteAddr": "d.remote_addr",
    "localPort": "d.local_port",
    "remotePort": "d.remote_port",
    "processId": "d.process_id",
    "endpointId": "d.endpoint_id",
    "parentEndpointId": "d.parent_endpoint_id",
}
# REFLECT events: `d` is the address's ReflectData.
_REFLECT = {
    "zero": "0",
    "timestamp": "a.timestamp",
    "event": "a.event",
    "processId": "d.process_id",
    "layer": "d.layer",
    "priority": "d.priority",
}
_EVENT_CONDITION = {"outbound": "a.outbound", "inbound": "not a.outbound", "loopback": "a.loopback"}


def _value_expression(field: str) -> tuple[str, str | None]:
    """(expression, guard expression or None) at the network layers."""
    if field in _ADDRESS:
        return _ADDRESS[field], None
    if field in _OTHER:
        return _OTHER[field], None
    return _READS[field], _HEADER_GUARD[field.partition(".")[0]]


def _index_parts(node: Test) -> tuple[str | None, str]:
    """(guard, test) for an index field: false when the word lies outside the data."""
    base_name = node.field.split(".")[0].rstrip("0123456789")
    size = FIELDS[node.field].index_size
    base, length = _INDEX_BASE[base_name]
    guard = None if base_name == "packet" else _HEADER_GUARD[base_name]
    if node.index >= 0:
        start = f"{base} + {node.index}" if base != "0" else str(node.index)
        in_range = f"{node.index + size} <= {length}"
    else:
        start = f"{base} + {length} - {-node.index}"
        in_range = f"{-node.index} <= {length}"
    value = effective_value(node.field, node.value)
    if size == 1:
        return guard, f"{in_range} and r[{start}] {node.op} {value}"
    if 0 <= value < 1 << (8 * size):
        constant = repr(value.to_bytes(size, "big"))
        return guard, f"{in_range} and r[{start}:{start} + {size}] {node.op} {constant}"
    return guard, f"{in_range} and int.from_bytes(r[{start}:{start} + {size}], 'big') {node.op} {value}"


# Multi-byte fields compared as big-endian byte strings (same order, no int
# conversion): (slice, width, value offset). Folding leaves only values that fit.
_BYTE_FIELDS = {
    name: (f"r[{read.field.offset}:{read.field.offset + read.field.size}]", read.field.size,
           IPV4_MAPPED if read.header == "ip" else 0)
    for name, read in FILTER_READS.items() if read.field is not None and read.field.kind == "address"}
# Fields whose "!= 0" test is a plain condition.
_CONDITION = {
    "outbound": "a.outbound", "inbound": "not a.outbound", "loopback": "a.loopback",
    "impostor": "a.impostor", "fragment": "Fr", **_HEADER_GUARD,
}


_LOCALS = "r, a, n, V, T, t, e, P, Fr, po, pl, H"
# Python refuses expressions nested much deeper than this (its parser stops at
# 200 parentheses); deeper parts of a filter become helper functions.
_MAX_NESTING = 40


class _Names:
    """Fresh local names, the helper functions a deep filter needs, and how
    the filter's layer reads each field (`values`, `conditions`)."""

    def __init__(self, layer: Layer = Layer.NETWORK):
        self.count = 0
        self.helpers: list[str] = []
        # The transport protocols T may be where an expression is evaluated (None: any, or none).
        self.transports: frozenset | None = None
        self.locals = _LOCALS
        if layer in NETWORK_LAYERS:
            self.values, self.conditions = _value_expression, _CONDITION
        else:
            self.locals = "r, a, d"
            table = _REFLECT if layer == Layer.REFLECT else _ENDPOINT
            self.values, self.conditions = (lambda field: (table[field], None)), _EVENT_CONDITION

    def unsettled(self, guard: str | None) -> str | None:
        """The guard, or None when the function has already made sure it holds."""
        if self.transports is not None and len(self.transports) == 1 and guard == _transport_guard(self.transports):
            return None
        return guard

    def new(self) -> str:
        self.count += 1
        return f"_v{self.count}"

    def helper(self, body: str) -> str:
        name = f"_h{len(self.helpers)}"
        self.helpers.append(f"def {name}({self.locals}):\n    return {body}\n")
        return f"{name}({self.locals})"


def _operand(node: Test, names: _Names) -> tuple[str | None, str, str]:
    """(guard, value expression, constant) so that the test is `guard and value op constant`."""
    if node.index is not None:
        raise ValueError("index fields have their own form")
    if node.field in _BYTE_FIELDS:
        piece, width, offset = _BYTE_FIELDS[node.field]
        guard = "V == 4" if node.field.startswith("ip.") else "V == 6"
        return guard, piece, repr((node.value - offset).to_bytes(width, "big"))
    value, guard = names.values(node.field)
    return guard, value, str(effective_value(node.field, node.value))


def _test_parts(node: Test, names: _Names, cached: dict | None = None) -> tuple[str | None, str]:
    """(guard, comparison); the test is `guard and comparison`. `cached` maps a
    field read more than once in a chain to its local name (None until read)."""
    if node.index is not None:
        return _index_parts(node)
    conditions = names.conditions
    if node.field in conditions and FIELDS[node.field].lo is not None:
        if (node.op, node.value) in (("!=", 0), ("==", 1)):
            return None, conditions[node.field]
        if (node.op, node.value) in (("==", 0), ("!=", 1)):
            return None, f"not {conditions[node.field]}" if " " not in conditions[node.field] \
                else f"not ({conditions[node.field]})"
    guard, value, constant = _operand(node, names)
    if cached is not None and node.field in cached:
        if cached[node.field] is None:
            cached[node.field] = names.new()
            value = f"({cached[node.field]} := {value})"
        else:
            value = cached[node.field]
    return guard, f"{value} {node.op} {constant}"


def _chain(node: And | Or, names: _Names, depth: int) -> str:
    """A flat and/or chain, with tests regrouped so that each guard and each
    field is evaluated once: `tcp.DstPort == 80 or tcp.DstPort == 443 or
    tcp.SrcPort == 80` becomes `T == 6 and (dport in {80, 443} or sport == 80)`.
    Regrouping is sound because every operand is free of side effects."""
    is_or = isinstance(node, Or)
    joiner = " or " if is_or else " and "
    parts = flatten(type(node), node)
    equal_values: dict[str, list[int]] = {}
    if is_or:
        for part in parts:
            if isinstance(part, Test) and part.index is None and part.op == "==" \
                    and part.field not in _BYTE_FIELDS and part.field not in names.conditions:
                equal_values.setdefault(part.field, []).append(effective_value(part.field, part.value))
    reads: dict[str, int] = {}
    for part in parts:
        if isinstance(part, Test) and part.index is None and part.field not in equal_values:
            reads[part.field] = reads.get(part.field, 0) + 1
    cached = {field: None for field, count in reads.items() if count > 1}
    by_guard: dict[str | None, list[str]] = {}
    done_fields = set()
    for part in parts:
        if not isinstance(part, Test):
            by_guard.setdefault(None, []).append(_expression(part, names, depth + 1))
            continue
        if part.index is None and part.op == "==" and part.field in equal_values:
            if part.field in done_fields:
                continue
            done_fields.add(part.field)
            values = sorted(set(equal_values[part.field]))
            value, guard = names.values(part.field)
            test = f"{value} == {values[0]}" if len(values) == 1 else \
                f"{value} in {{{', '.join(str(v) for v in values)}}}"
        else:
            guard, test = _test_parts(part, names, cached)
        by_guard.setdefault(names.unsettled(guard), []).append(test)
    terms = []
    for guard, tests in by_guard.items():
        inner = joiner.join(f"({t})" for t in tests)
        if guard is None:
            terms.append(inner)
        elif is_or:
            terms.append(f"({guard} and ({inner}))")
        else:
            terms.append(f"{guard} and {inner}")
    return "(" + joiner.join(terms) + ")"


def _expression(node: Node, names: _Names, depth: int = 0) -> str:
    if isinstance(node, Const):
        return "True" if node.value else "False"
    if isinstance(node, (And, Or, Cond)) and depth >= _MAX_NESTING:
        return names.helper(_expression(node, names, 0))
    if isinstance(node, (And, Or)):
        return _chain(node, names, depth)
    if isinstance(node, Cond):
        # What the test's outcome says of the transport spares the branches' tests a look.
        test = _expression(node.test, names, depth + 1)
        outer = names.transports
        required = required_transports(node.test)
        if required is not None:
            names.transports = required if outer is None else outer & required
        then = _expression(node.then, names, depth + 1)
        names.transports = outer
        absent = _present_transport(node.test)
        if outer is not None and absent is not None:
            names.transports = outer - {absent}
        otherwise = _expression(node.otherwise, names, depth + 1)
        names.transports = outer
        return f"({then} if {test} else {otherwise})"
    guard, test = _test_parts(node, names)
    guard = names.unsettled(guard)
    return f"({guard} and {test})" if guard else f"({test})"


_PAYLOAD_FIELDS = frozenset({"tcp.PayloadLength", "udp.PayloadLength", "tcp.Payload", "tcp.Payload16", "tcp.Payload32",
                   "udp.Payload", "udp.Payload16", "udp.Payload32"})


# The prelude repeats parse_headers' decisions inline for IPv4 and for IPv6
# without extension headers (the common cases), so that most packets are
# judged without building a HeaderLayout, and it computes only what the
# filter reads: n (length), V (IP version), P (protocol), Fr (fragment),
# T (transport protocol present, 0 if none), t (its offset), po/pl (payload).
_CHECK = f"""\
    if r.__class__ is not bytes:
        r = bytes(r)
    n = len(r)
    if n < {IPV4_HEADER_LEN}:
        return False
    V = {field_expression(IPV4["version"], "0")}
    if V == 4:
        h = {_READS["ip.HdrLength"]} << 2
        if h < {IPV4_HEADER_LEN} or a.ipv6 or n < h:
            return False
        e = {_READS["ip.Length"]}
        if e < h:
            return False
    elif V != 6 or n < {IPV6_HEADER_LEN} or not a.ipv6:
        return False
"""


def _transport_prelude(protocols: set[int], need_p: bool, need_fr: bool, required: frozenset | None) -> str:
    lines = [
        "    T = 0",
        "    if V == 4:",
        "        if e > n:",
        "            e = n",
    ]
    if need_p or protocols:
        lines.append(f"        P = {_READS['ip.Protocol']}")
    if need_fr:
        lines.append(f"        Fr = {_READS['ip.MF']} or {_READS['ip.FragOff']}")
    v4 = sorted(p for p in protocols if p != IPPROTO_ICMPV6)
    lines += _classify_lines(v4, "h", "        ", f"not {_READS['ip.FragOff']}")
    lines += [
        "    else:",
        f"        e = {_READS['ipv6.Length']} + {IPV6_HEADER_LEN}",
        "        if e > n:",
        "            e = n",
        f"        P = {_READS['ipv6.NextHdr']}",
        f"        h = {IPV6_HEADER_LEN}",
        "        Fr = M = False",
        "        O = 0",
        *headers.extension_walk_lines("        "),
    ]
    v6 = sorted(p for p in protocols if p != IPPROTO_ICMP)
    lines += _classify_lines(v6, "h", "        ", "not O")
    if required is not None:
        # T is set only to protocols the filter requires.
        lines += ["    if not T:", "        return False"]
    lines.append("    t = h")
    return "\n".join(lines) + "\n"


def _at_least(field: HeaderField, base: str, value: int) -> str:
    """`field >= value`; a field in a byte's top bits is compared as the whole byte, unshifted."""
    if field.size == 1 and field.shift + field.mask.bit_length() == 8:
        return f"r[{base} + {field.offset}] >= {value << field.shift}"
    return f"{field_expression(field, base)} >= {value}"


def _classify_lines(protocols: list[int], offset: str, indent: str, transport_follows: str) -> list[str]:
    """Sets T when one of `protocols` follows at `offset` with a header that fits
    and `transport_follows` (no later fragment), tested last as the least likely to fail."""
    lines = []
    keyword = "if"
    for protocol in protocols:
        fits = f"e - {offset} >= {TRANSPORT_HEADER_MIN[protocol]}"
        if protocol == IPPROTO_TCP:
            fits += f" and {_at_least(TCP['hdr_len'], offset, TCP_HEADER_MIN // 4)}"
        lines += [f"{indent}{keyword} P == {protocol}:",
                  f"{indent}    if {fits} and {transport_follows}:",
                  f"{indent}        T = {protocol}"]
        keyword = "elif"
    return lines


def _payload_lines(required: frozenset | None) -> str:
    """po and pl, the payload's offset and length, for the transports T may be."""
    tcp = required is None or IPPROTO_TCP in required
    others = required is None or bool(required - {IPPROTO_TCP})
    branches = []
    if tcp:
        branches.append((f"T == {IPPROTO_TCP}", [f"q = {_READS['tcp.HdrLength']} << 2",
                                                   "po = t + (q if q < e - t else e - t)"]))
    if others:
        branches.append(("T", [f"po = t + {UDP_HEADER_LEN}"]))
    if required is None:
        branches.append((None, ["po = t"]))
    lines = []
    if len(branches) == 1:
        lines += [f"    {line}" for line in branches[0][1]]
    else:
        for k, (condition, body) in enumerate(branches):
            lines.append("    else:" if condition is None else f"    {'if' if k == 0 else 'elif'} {condition}:")
            lines += [f"        {line}" for line in body]
    lines.append("    pl = e - po")
    return "\n".join(lines) + "\n"


def _transport_guard(protocols: frozenset) -> str:
    """The guard of the one transport protocol in `protocols`."""
    return next(guard for header, guard in _HEADER_GUARD.items() if TRANSPORT_PROTOCOLS.get(header) in protocols)


def _present_transport(node: Node) -> int | None:
    """The protocol whose presence `node` tests (`tcp`, `udp != 0`), if that is all it does."""
    if isinstance(node, Test) and node.field in TRANSPORT_PROTOCOLS and (node.op, node.value) in (("!=", 0), ("==", 1)):
        return TRANSPORT_PROTOCOLS[node.field]
    return None


def required_transports(node: Node) -> frozenset | None:
    """The transport protocols one of which a packet must have for `node` to hold
    (a test on a header's field is false without that header); None when any will do."""
    if isinstance(node, Test):
        if node.field in TRANSPORT_PROTOCOLS:
            present = _present_transport(node)
            return None if present is None else frozenset({present})
        guard = FIELDS[node.field].guard
        return frozenset({TRANSPORT_PROTOCOLS[guard]}) if guard in TRANSPORT_PROTOCOLS else None
    if isinstance(node, Const):
        return None if node.value else frozenset()
    if isinstance(node, And):
        parts = [required_transports(part) for part in flatten(And, node)]
        known = [part for part in parts if part is not None]
        return frozenset.intersection(*known) if known else None
    branches = flatten(Or, node) if isinstance(node, Or) else [node.then, node.otherwise]
    union = frozenset()
    for branch in branches:
        required = required_transports(branch)
        if required is None:
            return None
        union |= required
    return union

def _reads(tree: Node) -> tuple[set[int], bool, bool, bool, bool]:
    """(transport protocols tested, needs P, needs Fr, needs payload bounds, needs the hash)."""
    protocols: set[int] = set()
    need_p = need_fr = payload = hashing = False
    for node in walk(tree):
        if not isinstance(node, Test):
            continue
        name = node.field
        head = name.split(".")[0]
        if head in TRANSPORT_PROTOCOLS:
            protocols.add(TRANSPORT_PROTOCOLS[head])
        elif name in ("localPort", "remotePort"):
            protocols.update(TRANSPORT_PROTOCOLS.values())
        elif name == "protocol":
            need_p = True
        elif name == "fragment":
            need_fr = True
        elif name.startswith("random"):
            hashing = True
        if name in _PAYLOAD_FIELDS:
            payload = True
    return protocols, need_p, need_fr, payload, hashing


def _early_parts(tree: Node) -> tuple[Node | None, Node]:
    """Operands of a top-level `and` that read no transport header, to be
    decided before the transport header is located, and the rest."""
    if not isinstance(tree, And):
        return None, tree
    early, rest = [], []
    for part in flatten(And, tree):
        protocols, need_p, need_fr, payload, hashing = _reads(part)
        (rest if protocols or need_p or need_fr or payload or hashing else early).append(part)
    if not rest or not early:
        return None, tree
    return _and_all(early), _and_all(rest)


def _and_all(parts: list[Node]) -> Node:
    node = parts[0]
    for part in parts[1:]:
        node = And(node, part)
    return node


def python_source(tree: Node, layer: Layer = Layer.NETWORK) -> str:
    if layer not in NETWORK_LAYERS:
        return _event_source(tree, layer)
    names = _Names()
    source = _CHECK
    early, tree = _early_parts(tree)
    if early is not None:
        source += f"    if not {_expression(early, names)}:\n        return False\n"
    protocols, *reads = _reads(tree)
    required = required_transports(tree) or None
    source += _reading(protocols, *reads, required)
    if required is not None:
        # Past the reading, T is one of these: it refuses a packet with none.
        names.transports = frozenset(protocols) & required
    # Conditions such as `a.outbound` or `Fr` may be truthy non-bools: the
    # answer is always exactly True or False.
    source += f"    return True if {_expression(tree, names)} else False\n"
    if names.helpers:
        return "".join(names.helpers) + "def match(r, a):\n" + _HELPERS_LOCALS + source
    return "def match(r, a):\n" + source


# Helpers take every local; give the ones a filter never set a value.
_HELPERS_LOCALS = "    T = t = e = P = Fr = po = pl = H = 0\n"


def _reading(protocols: set, need_p: bool, need_fr: bool, payload: bool, hashing: bool,
             required: frozenset | None = None) -> str:
    """What a filter's tests read, after the packet check: the transport header, the payload, the hash.
    With `required`, a packet whose transport is none of those protocols is refused once it is known."""
    source = ""
    if required is not None:
        protocols = protocols & required
    if protocols or need_p or need_fr or payload:
        source += _transport_prelude(protocols, need_p, need_fr, required)
    if payload:
        source += _payload_lines(required)
    if hashing:
        source += "    H = layout_hash(r, parse_headers(r), a.timestamp)\n"
    return source


def _event_source(tree: Node, layer: Layer) -> str:
    """An event has no packet: the filter reads the address and its layer data
    `d`; an address without that data never matches."""
    names = _Names(layer)
    data = "a.reflect" if layer == Layer.REFLECT else "a.flow"
    body = f"    return True if {_expression(tree, names)} else False\n"
    return "".join(names.helpers) + (f"def match(r, a):\n    d = {data}\n"
                                     "    if d is None:\n        return False\n" + body)


def compile_tree(tree: Node, name: str = "<filter>", layer: Layer = Layer.NETWORK):
    return compile_source(python_source(tree, layer), name, "match", {})


# -- several filters in one function (filter/matcher.py) ---------------------------------

class SharedSource:
    """Python for several network-layer trees judged in one function over (r, a):
    one packet check and header walk for all of them, then `condition(tree)`
    for each test; `function(name, body, rejected)` wraps a body that ends in
    its own return. A packet the check refuses returns `rejected`."""

    def __init__(self, trees: list[Node]):
        self.trees = trees
        self._names = _Names()

    def condition(self, tree: Node) -> str:
        return _expression(tree, self._names)

    def equality(self, tree: Node) -> tuple[str, int] | None:
        """(field, value) when `tree` is `field == value` over a field read as a plain
        number, which a table keyed by the field's value can decide; else None."""
        if isinstance(tree, Test) and tree.index is None and tree.op == "==" \
                and tree.field not in _BYTE_FIELDS and tree.field not in self._names.conditions:
            return tree.field, effective_value(tree.field, tree.value)
        return None

    def read(self, field: str) -> tuple[str, str | None]:
        """(value expression, guard) of a field: the value may be read where the guard holds."""
        return self._names.values(field)

    def function(self, name: str, body: str, rejected: str) -> str:
        protocols: set[int] = set()
        need_p = need_fr = payload = hashing = False
        for tree in self.trees:
            reads = _reads(tree)
            protocols |= reads[0]
            need_p, need_fr = need_p or reads[1], need_fr or reads[2]
            payload, hashing = payload or reads[3], hashing or reads[4]
        source = _CHECK.replace("return False", f"return {rejected}")
        source += _reading(protocols, need_p, need_fr, payload, hashing)
        head = f"def {name}(r, a):\n"
        if self._names.helpers:
            head += _HELPERS_LOCALS
        return "".join(self._names.helpers) + head + source + body


# -- what decides filters for packets of the common shapes (filter/matcher.py) ------------

# The address fields a filter may read that a header key carries (the length is the packet's).
_KEYED_ADDRESS = frozenset({"zero", "outbound", "inbound", "length"})
# Decided by the packet check and the transport classification, whose bytes every key holds.
_KEYED_CLASSIFICATION = frozenset({"fragment", "protocol", *_HEADER_GUARD})
_KEYED_PAYLOAD_LENGTH = frozenset({"tcp.PayloadLength", "udp.PayloadLength"})


def _field_bytes(field: HeaderField, base: int) -> set[int]:
    return set(range(base + field.offset, base + field.offset + field.size))


def _key_pieces(name: str) -> list[tuple[HeaderField, str]] | None:
    """(field, header) for each header field a test of `name` reads beyond the packet check
    and the transport classification; None when it reads what no header key holds."""
    if name in _KEYED_ADDRESS or name in _KEYED_CLASSIFICATION or name in _KEYED_PAYLOAD_LENGTH:
        return []
    if name in ("localPort", "remotePort"):
        ports = [(FILTER_READS[f"{h}.{f}"].field, h) for h in ("tcp", "udp") for f in ("SrcPort", "DstPort")]
        return ports + [(FILTER_READS[f"{h}.Type"].field, h) for h in ("icmp", "icmpv6")]
    if name in ("localAddr", "remoteAddr"):
        return [(FILTER_READS[f"{h}.{f}"].field, h) for h in ("ip", "ipv6") for f in ("SrcAddr", "DstAddr")]
    if name in FILTER_READS:
        read = FILTER_READS[name]
        return [(field, read.header) for field, _ in read.pieces]
    return None


def header_key_bytes(trees: list[Node]) -> dict[int, dict[int | None, tuple[int, ...]]] | None:
    """{IP version: {protocol: offsets}}: the bytes that, with the packet's length and its
    address's `outbound` and `ipv6`, decide every tree for a packet of a common shape (an
    IPv4 header of 20 bytes, or an IPv6 header followed by no extension header) whose
    protocol is that one (None: any other); None when a tree reads anything else (payload
    bytes, the hash, other address fields).

    Those bytes are what the generated function reads of such a packet: the packet
    check's and the transport classification's (version, lengths, fragment, protocol,
    TCP's header length), each IP field's, and the transport fields of that protocol,
    which are read only when the packet's transport is that protocol."""
    ip = {4: set().union(*(_field_bytes(IPV4[name], 0) for name in ("version", "length", "frag_offset", "protocol"))),
          6: set().union(*(_field_bytes(IPV6[name], 0) for name in ("version", "length", "next_hdr")))}
    base = {4: IPV4_HEADER_LEN, 6: IPV6_HEADER_LEN}
    transport: dict[int, set] = {number: set() for number in TRANSPORT_PROTOCOLS.values()}
    classified: set[int] = set()
    for tree in trees:
        classified |= _reads(tree)[0]
        for node in walk(tree):
            if not isinstance(node, Test):
                continue
            pieces = None if node.index is not None else _key_pieces(node.field)
            if pieces is None:
                return None
            for field, header in pieces:
                if header == "ip":
                    ip[4] |= _field_bytes(field, 0)
                elif header == "ipv6":
                    ip[6] |= _field_bytes(field, 0)
                else:
                    transport[TRANSPORT_PROTOCOLS[header]] |= _field_bytes(field, 0)
    if IPPROTO_TCP in classified:
        transport[IPPROTO_TCP] |= _field_bytes(TCP["hdr_len"], 0)
    return {version: {None: tuple(sorted(ip[version])), **{
        number: tuple(sorted(ip[version] | {base[version] + offset for offset in offsets}))
        for number, offsets in transport.items() if offsets}} for version in (4, 6)}


def compile_source(source: str, name: str, function: str, constants: dict):
    namespace = {"parse_headers": headers.parse_headers, "layout_hash": layout_hash, **constants}
    exec(compile(source, name, "exec"), namespace)
    return namespace[function]
