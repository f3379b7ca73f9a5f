"""The kernel prefilter: what netfilter can test of a filter, per IP version:
rules of nf_tables' own expressions where they can (kernel_native: field
comparisons, their conjunctions and exclusive disjunctions), else one
classic BPF program for the x_tables bpf match, which costs the kernel
more per packet.

    kernel_test(filter, version, hook=None) -> KernelTest(match, exact)
    kernel_match_for(filter, layer) -> KernelMatch      ((version, hook) -> match)
    kernel_exactness(filter, layer) -> {4: bool, 6: bool}

The match accepts a superset of the filter's packets (kernel_approximation).
Direction is exact when the hook is known (INPUT: inbound, OUTPUT:
outbound, where `loopback` becomes a test of the output interface). The
bpf match takes at most 64 instructions: a longer program is cut by
replacing its deepest subtrees with "unknown" until it fits.
"""

from __future__ import annotations

import functools
import os
from typing import Callable, NamedTuple

from ..address import Layer
from .ast import And, Cond, Const, Node, Or, Test
from .bpf import MAX_INSTRUCTIONS, Instruction
from .bpf_compiler import compile_bpf
from .bpf_prelude import reads_transport
from .chains import chain, flatten_and
from .kernel_approximation import FALSE, TRUE, approximate
from .kernel_fields import compare
from .kernel_native import Conjunction, native_match


class PacketMatch(NamedTuple):
    """What a handle's rule tests of a packet besides its hook and mark; every part given must hold."""

    loopback: bool | None = None                    # OUTPUT only: leaves through lo (True) or not (False)
    program: tuple[Instruction, ...] | None = None  # a classic BPF program the bpf match runs
    # Tests in nf_tables expressions, one rule each: the packet satisfies one of them (None: no such test).
    native: tuple[Conjunction, ...] | None = None


class KernelTest(NamedTuple):
    """What the kernel tests of a filter for one IP version.

    match: covers every packet the filter accepts (PacketMatch() = every
    packet, None = none of that version); exact: the match accepts nothing
    else, so user space need not look again (a DROP handle then drops in
    the kernel alone).
    """

    match: PacketMatch | None
    exact: bool


def _layout_dependent(tree: Node, version: int) -> bool:
    """An IPv6 program that reads transport fields accepts extension-header packets whole."""
    return version == 6 and bool(reads_transport(tree, version))


class Translation(NamedTuple):
    tree: Node                       # what the program tests
    program: list[Instruction] | None   # None: every packet (tree is true) or none (false)
    exact: bool


def translate(tree: Node, version: int, hook: str | None = None,
              approximation: tuple[Node, bool] | None = None) -> Translation:
    """The approximated tree and its BPF program for one IP version (`approximation`:
    approximate(tree, version, hook), when the caller has it)."""
    approximated, exact = approximation or approximate(tree, version, hook)
    depth = _depth(tree)
    while True:
        if isinstance(approximated, Const):
            return Translation(approximated, None, exact)
        try:
            program = compile_bpf(approximated, version)
        except (OverflowError, RecursionError):
            program = None
        if program is not None and len(program) <= MAX_INSTRUCTIONS:
            return Translation(approximated, program, exact and not _layout_dependent(approximated, version))
        depth -= 1
        approximated, _ = approximate(tree, version, hook, depth)
        exact = False


def _depth(tree: Node) -> int:
    deepest, stack = 0, [(tree, 0)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(node, (And, Or)):
            stack += [(node.left, level + 1), (node.right, level + 1)]
        elif isinstance(node, Cond):
            stack += [(node.test, level + 1), (node.then, level + 1), (node.otherwise, level + 1)]
    return deepest


def _tree(filter) -> Node:
    if isinstance(filter, (Const, Test, And, Or, Cond)):
        return filter
    if isinstance(filter, str):
        from . import parse_filter
        return parse_filter(filter)
    return filter.tree


@functools.lru_cache(maxsize=1)
def xt_bpf_available() -> bool:
    """Whether the running kernel has the xt_bpf match (built in, loaded or loadable)."""
    for path in ("/proc/net/ip_tables_matches", "/proc/net/ip6_tables_matches"):
        try:
            with open(path) as f:
                if any(line.strip() == "bpf" for line in f):
                    return True
        except OSError:
            pass
    release = os.uname().release
    directory = f"/lib/modules/{release}/kernel/net/netfilter"
    try:
        if any(name.startswith("xt_bpf.ko") for name in os.listdir(directory)):
            return True
    except OSError:
        pass
    try:
        import gzip
        with gzip.open("/proc/config.gz", "rt") as f:
            return any(line.strip() in ("CONFIG_NETFILTER_XT_MATCH_BPF=y", "CONFIG_NETFILTER_XT_MATCH_BPF=m")
                       for line in f)
    except OSError:
        return False


def _take_loopback(tree: Node) -> tuple[Node, bool | None]:
    """At the OUTPUT hook, top-level `loopback` tests become a test of the output interface
    (PacketMatch.loopback)."""
    if not isinstance(tree, (And, Test)):
        return tree, None
    parts = flatten_and(tree)
    wanted: set[int] = {0, 1}
    kept = []
    for part in parts:
        if isinstance(part, Test) and part.field == "loopback" and part.index is None:
            wanted &= {v for v in (0, 1) if compare(part.op, v, part.value)}
        else:
            kept.append(part)
    if not wanted:
        return FALSE, None
    rest = chain(And, kept) if kept else TRUE
    if wanted == {0, 1}:
        return (tree if len(kept) == len(parts) else rest), None
    return rest, wanted == {1}


def kernel_test(filter, version: int, hook: str | None = None, use_bpf: bool | None = None) -> KernelTest:
    """What the kernel tests of `filter` (a Filter, a tree or filter text) for one IP version.

    `hook` ("I", "O", "P", "F") makes direction exact when the match serves
    one hook only. The callable NfqueueBackend(kernel_prefilter=...) takes.
    """
    tree, loopback = _take_loopback(_tree(filter)) if hook == "O" else (_tree(filter), None)
    approximation = approximate(tree, version, hook)
    approximated, exact = approximation
    if isinstance(approximated, Const):
        return KernelTest(None, True) if approximated == FALSE else KernelTest(PacketMatch(loopback), exact)
    native = native_match(approximated, version)
    if native is not None:
        return KernelTest(PacketMatch(loopback, native=native.conjunctions), exact and native.exact)
    translation = translate(tree, version, hook, approximation)
    if translation.program is None:
        return KernelTest(None, True) if translation.tree == FALSE else \
            KernelTest(PacketMatch(loopback), translation.exact)
    if not (xt_bpf_available() if use_bpf is None else use_bpf):
        return KernelTest(PacketMatch(loopback), False)
    return KernelTest(PacketMatch(loopback, tuple(translation.program)), translation.exact)


HOOKS_OF_LAYER = {Layer.NETWORK: ("I", "O"), Layer.NETWORK_FORWARD: ("F",)}
KernelMatch = Callable[[int, str], "PacketMatch | None"]


def kernel_match_for(filter, layer: Layer = Layer.NETWORK) -> KernelMatch:
    """The callable netfilter_rules.HandleRules.kernel_match takes: (IP version, hook) -> match."""
    tests = {(version, hook): kernel_test(filter, version, hook)
             for version in (4, 6) for hook in HOOKS_OF_LAYER[Layer(layer)] + ("P",)}
    return lambda version, hook: tests[version, hook].match


def kernel_exactness(filter, layer: Layer = Layer.NETWORK) -> dict[int, bool]:
    """Per IP version: does the kernel match accept exactly the filter's packets, at every hook of the layer?"""
    return {version: all(kernel_test(filter, version, hook).exact for hook in HOOKS_OF_LAYER[Layer(layer)])
            for version in (4, 6)}
