"""The WinDivert 2.2 filter language: compile once, match raw packets fast.

    compile_filter(text, layer) -> Filter      Filter.match(raw, address) -> bool
    eval_filter(text, raw, address) -> bool    format_filter(text, layer) -> str
    FilterError(message, position)
"""

from __future__ import annotations

import functools

from ..address import Address, Layer
from .ast import And, Cond, Const, Node, Or, Test
from .compiler import compile_tree, python_source
from .errors import FilterError
from .formatter import format_tree
from .parser import parse

__all__ = [
    "Filter", "FilterError", "compile_filter", "eval_filter", "format_filter", "parse_filter",
    "Node", "Const", "Test", "And", "Or", "Cond",
]


class Filter:
    """A compiled filter.

    `match(raw: bytes, address: Address) -> bool` is the generated function
    itself (no wrapper on the hot path); every byte it reads is bounds-checked
    first, so it never raises for any bytes.
    """

    __slots__ = ("text", "layer", "tree", "match")

    def __init__(self, text: str, layer: Layer, tree: Node):
        self.text = text
        self.layer = layer
        self.tree = tree
        try:
            self.match = compile_tree(tree)
        except (SyntaxError, RecursionError, MemoryError) as exc:
            raise FilterError("Filter expression too deep", 0) from exc

    @property
    def source(self) -> str:
        return python_source(self.tree)

    def __repr__(self) -> str:
        return f"Filter({self.text!r}, layer={self.layer.name})"


def parse_filter(text: str, layer: Layer = Layer.NETWORK) -> Node:
    """The folded syntax tree of `text` (see filter/ast.py)."""
    return compile_filter(text, layer).tree


@functools.lru_cache(maxsize=512)
def _compile_cached(text: str, layer: Layer) -> Filter:
    try:
        tree = parse(text, layer)
    except RecursionError as exc:
        raise FilterError("Filter expression too deep", 0) from exc
    return Filter(text, layer, tree)


def compile_filter(text: str, layer: Layer = Layer.NETWORK) -> Filter:
    if not isinstance(text, str):
        raise FilterError("Filter expression is not text", 0)
    return _compile_cached(text, Layer(layer))


def eval_filter(text: str, raw: bytes, address: Address) -> bool:
    return compile_filter(text, address.layer).match(raw, address)


def format_filter(text: str, layer: Layer = Layer.NETWORK) -> str:
    return format_tree(compile_filter(text, layer).tree)
