"""Many filters judged at once: one generated function returning which of them match.

    match = compile_matcher([(filter or None, outbound or None) or None, ...])
    match(raw, address) -> int      bit i set when entry i matches
    masks = compile_batch_matcher(entries, match)
    masks(packets) -> list[int]     match(packet.buffer, packet.address) for each packet

An entry None never matches (a disabled rule keeps its bit). An entry's filter None matches every packet (even one that is not IP, as a
rule whose filter is "true" does); its direction None means both, True
outbound only, False inbound only. Bit i is set exactly when entry i's
Filter.match would say True and the direction fits.

The packet is checked and its headers located once for all entries; filters
that are equality tests (`udp.DstPort == 53 or tcp.DstPort == 53`) are
decided by one table lookup per field between them; tests that several
other filters share (the top-level `and` operands they have in common) are
evaluated once, in nested ifs, so the filters that cannot match cost one
failed test between them.

The batch form asks that function once per header key: for packets of the
common shapes (an IPv4 header of 20 bytes, an IPv6 header followed by no
extension header), the bytes every filter's answer depends on
(compiler.header_key_bytes: the IP header's, and the transport header's of the
packet's protocol), read by one struct unpack, with the length and the
address's direction and IP version. A steady flow's packets share a key,
so its batch costs one lookup a packet.
"""

from __future__ import annotations

import struct

from ..header_fields import IPV4, IPV4_HEADER_LEN, IPV6, IPV6_EXTENSION_HEADERS, IPV6_HEADER_LEN
from .ast import And, Const, Node, Or
from .chains import flatten
from .compiler import SharedSource, compile_source, header_key_bytes
from .parser import recursion_room

# Answers kept per compiled matcher; past this many keys (traffic of many shapes) they start again.
KEYS_KEPT = 4096
# The first byte of an IPv4 header of 20 bytes: version 4, header length 5 words.
_IPV4_PLAIN = 4 << IPV4["version"].shift | IPV4_HEADER_LEN // 4
_IPV6_NEXT = IPV6["next_hdr"].offset
_IPV6_FIRST = 6 << IPV6["version"].shift
_VERSION_BITS = IPV6["version"].mask << IPV6["version"].shift

# Nested ifs beyond this depth are written flat (Python limits indentation to 100 levels).
_MAX_DEPTH = 24


def compile_matcher(entries: list[tuple[object | None, bool | None]]):
    """The function over (raw, address) returning the bitmask of matching entries."""
    always = {True: 0, False: 0}
    direction = {True: 0, False: 0}
    tested: list[tuple[int, frozenset]] = []
    for index, entry in enumerate(entries):
        if entry is None:
            continue
        filter_, outbound = entry
        bit = 1 << index
        for side in (True, False):
            if outbound is None or outbound == side:
                (always if filter_ is None else direction)[side] |= bit
        if filter_ is not None:
            tested.append((bit, _conjuncts(filter_.tree)))
    tested = [(bit, parts) for bit, parts in tested if parts is not None]
    constants = {"AO": always[True], "AI": always[False], "DO": direction[True], "DI": direction[False]}
    if not tested:
        return lambda raw, address, AO=constants["AO"], AI=constants["AI"]: AO if address.outbound else AI
    try:
        with recursion_room():
            return _compile(tested, constants)
    except (SyntaxError, RecursionError, MemoryError):
        return _one_by_one(entries)


def _conjuncts(tree: Node) -> frozenset | None:
    """The operands of the tree's top-level `and` (None: it never matches)."""
    if isinstance(tree, Const):
        return frozenset() if tree.value else None
    return frozenset(flatten(And, tree))


def _compile(tested: list[tuple[int, frozenset]], constants: dict):
    shared = SharedSource([part for _, parts in tested for part in parts])
    tables, tested = _tables(tested, shared)
    lines = ["    m = 0"]
    constants = dict(constants)
    for number, (field, table) in enumerate(tables.items()):
        value, guard = shared.read(field)
        name = f"TABLE{number}"
        constants[name] = table
        lookup = f"m |= {name}.get({value}, 0)"
        lines.append(f"    if {guard}:\n        {lookup}" if guard else f"    {lookup}")
    _decide(tested, shared, lines, 1)
    lines.append("    return (m & DO | AO) if a.outbound else (m & DI | AI)")
    body = "\n".join(lines) + "\n"
    source = shared.function("matches", body, "AO if a.outbound else AI")
    return compile_source(source, "<rules>", "matches", constants)


def _tables(tested: list[tuple[int, frozenset]], shared: SharedSource):
    """Entries whose filter is `field == value`, or an `or` of such tests, as one table per
    field from its value to the entries' bits, so that rules told apart by a port or an
    address cost one lookup per field between them; the other entries as they were. Only
    when two entries or more are decided that way."""
    tables: dict[str, dict[int, int]] = {}
    rest, decided = [], 0
    for bit, parts in tested:
        keys = None
        if len(parts) == 1:
            (only,) = parts
            keys = [shared.equality(part) for part in flatten(Or, only)]
        if not keys or not all(keys):
            rest.append((bit, parts))
            continue
        decided += 1
        for field, value in keys:
            table = tables.setdefault(field, {})
            table[value] = table.get(value, 0) | bit
    if decided < 2:
        return {}, tested
    return tables, rest


def _decide(entries: list[tuple[int, frozenset]], shared: SharedSource, lines: list, depth: int) -> None:
    """Lines setting the bits of `entries` whose every conjunct holds; a conjunct
    common to several entries becomes one `if` around all of them."""
    indent = "    " * depth
    entries = list(entries)
    while entries:
        done = 0
        for bit, parts in entries:
            if not parts:
                done |= bit
        if done:
            lines.append(f"{indent}m |= {done}")
        entries = [(bit, parts) for bit, parts in entries if parts]
        counts: dict = {}
        for _, parts in entries:
            for part in parts:
                counts[part] = counts.get(part, 0) + 1
        common = max(counts, key=counts.get, default=None)
        if common is None or counts[common] < 2 or depth >= _MAX_DEPTH:
            for bit, parts in entries:
                test = " and ".join(shared.condition(part) for part in sorted(parts, key=repr))
                lines.append(f"{indent}if {test}:\n{indent}    m |= {bit}")
            return
        lines.append(f"{indent}if {shared.condition(common)}:")
        inner = [(bit, parts - {common}) for bit, parts in entries if common in parts]
        _decide(inner, shared, lines, depth + 1)
        entries = [(bit, parts) for bit, parts in entries if common not in parts]


def _one_by_one(entries):
    """The same answers, filter by filter (for sets of filters too large to merge)."""
    checks = [(1 << i, None if entry[0] is None else entry[0].match, entry[1])
              for i, entry in enumerate(entries) if entry is not None]

    def matches(raw, address) -> int:
        mask = 0
        for bit, match, outbound in checks:
            if (outbound is None or bool(address.outbound) == outbound) and (match is None or match(raw, address)):
                mask |= bit
        return mask
    return matches


def compile_batch_matcher(entries: list[tuple[object | None, bool | None]], match=None, keys_kept: int = KEYS_KEPT):
    """The function over a list of packets (objects with `buffer` and `address`) returning
    each one's bitmask, as `match` (compile_matcher(entries), made when not given) would.
    It keeps the answers for up to `keys_kept` header keys."""
    match = match or compile_matcher(entries)
    trees = [entry[0].tree for entry in entries if entry is not None and entry[0] is not None]
    offsets = header_key_bytes(trees)
    if offsets is None:
        return lambda packets: [match(packet.buffer, packet.address) for packet in packets]
    # Per protocol: (unpack_from, the bytes it needs, the answers known by key).
    shapes4, shapes6 = ({protocol: (*_unpacker(protocol_offsets), {})
                         for protocol, protocol_offsets in offsets[version].items()} for version in (4, 6))
    other4, other6 = shapes4.pop(None), shapes6.pop(None)
    extensions, plain4, first6, next6 = frozenset(IPV6_EXTENSION_HEADERS), _IPV4_PLAIN, _IPV6_FIRST, _IPV6_NEXT
    version_bits = _VERSION_BITS
    protocol4 = IPV4["protocol"].offset

    def masks(packets) -> list[int]:
        out = []
        append = out.append
        for packet in packets:
            r = packet.buffer
            a = packet.address
            n = len(r)
            if n >= IPV4_HEADER_LEN and r[0] == plain4:
                unpack, size, known = shapes4.get(r[protocol4], other4)
            elif n >= IPV6_HEADER_LEN and r[0] & version_bits == first6 and r[next6] not in extensions:
                unpack, size, known = shapes6.get(r[next6], other6)
            else:
                append(match(r, a))
                continue
            if n < size:
                append(match(r, a))
                continue
            key = (unpack(r), n, a.outbound, a.ipv6)
            mask = known.get(key)
            if mask is None:
                if len(known) >= keys_kept:
                    known.clear()
                mask = known[key] = match(r, a)
            append(mask)
        return out
    return masks


# Runs of bytes read as numbers where a struct code fits: small ints are cheaper keys than bytes objects.
_NUMBERS = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _unpacker(offsets: tuple[int, ...]):
    """(unpack_from reading the bytes at `offsets` as one tuple, the bytes a packet needs for it)."""
    layout, at, runs = "", 0, []
    for offset in offsets:
        if runs and offset == runs[-1][1]:
            runs[-1][1] += 1
        else:
            runs.append([offset, offset + 1])
    for start, end in runs:
        layout += f"{start - at}x" if start > at else ""
        layout += _NUMBERS.get(end - start, f"{end - start}s")
        at = end
    return struct.Struct(">" + layout).unpack_from, at
