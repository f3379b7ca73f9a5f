"""The WinDivert 2.2 filter language: compile once, match raw packets fast.

    compile_filter(text, layer) -> Filter      Filter.match(raw, address) -> bool
    eval_filter(text, raw, address) -> bool    format_filter(text, layer) -> str
    FilterError(message, position)

`Filter.tree` is the filter as a small tree (see filter/ast.py), for other
back ends such as a kernel prefilter; `Filter.program` is the reference's
jump-table form of the same filter (see filter/program.py).
"""

from __future__ import annotations

import functools

from ..address import Address, Layer
from .ast import And, Cond, Const, Node, Or, Test, walk
from .compiler import compile_tree, python_source
from . import errors
from .errors import FilterError
from .fields import FIELDS, effective_value
from .formatter import format_program
from .parser import parse, recursion_room
from .program import ACCEPT, REJECT, Step, flatten
from .simplify import simplified

__all__ = [
    "Filter", "FilterError", "compile_filter", "eval_filter", "format_filter", "parse_filter",
    "Node", "Const", "Test", "And", "Or", "Cond", "walk", "Step", "ACCEPT", "REJECT",
    "FIELDS", "effective_value",
]


class Filter:
    """A compiled filter.

    `match(raw: bytes, address: Address) -> bool` is the generated function
    itself (no wrapper on the hot path); every byte it reads is bounds-checked
    first, so it never raises for any bytes.
    """

    __slots__ = ("text", "layer", "tree", "program", "match")

    def __init__(self, text: str, layer: Layer, tree: Node, program: list[Step]):
        self.text = text
        self.layer = layer
        self.tree = tree
        self.program = program
        try:
            with recursion_room():
                self.match = compile_tree(tree, layer=layer)
        except (SyntaxError, RecursionError, MemoryError) as exc:
            raise FilterError("Filter expression too deep", 0) from exc

    @classmethod
    def build(cls, text: str, layer: Layer = Layer.NETWORK) -> "Filter":
        """Compile without the cache compile_filter keeps."""
        try:
            raw_tree = parse(text, layer)
            with recursion_room():
                program = flatten(raw_tree)
                tree = simplified(raw_tree)
        except RecursionError:
            raise FilterError("Filter expression too deep", 0) from None
        return cls(text, layer, tree, program)

    @property
    def source(self) -> str:
        with recursion_room():
            return python_source(self.tree, self.layer)

    def __repr__(self) -> str:
        return f"Filter({self.text!r}, layer={self.layer.name})"


@functools.lru_cache(maxsize=1024)
def _compile_cached(text: str, layer: Layer) -> Filter:
    return Filter.build(text, layer)


def _layer(layer) -> Layer:
    try:
        return Layer(layer)
    except ValueError:
        raise FilterError(f"Filter layer {layer!r} is not a WinDivert layer", 0) from None


def compile_filter(text: str, layer: Layer = Layer.NETWORK) -> Filter:
    if not isinstance(text, str):
        raise FilterError(f"Filter expression must be text, not {type(text).__name__}", 0)
    return _compile_cached(text, _layer(layer))


def parse_filter(text: str, layer: Layer = Layer.NETWORK) -> Node:
    """The filter's tree (see filter/ast.py)."""
    return compile_filter(text, layer).tree


def eval_filter(text: str, raw: bytes, address: Address) -> bool:
    return compile_filter(text, address.layer).match(raw, address)


def format_filter(text: str, layer: Layer = Layer.NETWORK) -> str:
    """The canonical text of a filter, or of a filter object ("@WinDiv_...", as the REFLECT layer gives it)."""
    if isinstance(text, str) and text.startswith("@WinDiv_"):
        from .serialize import parse_object
        try:
            program = parse_object(text)
        except ValueError:
            raise FilterError(errors.BAD_OBJECT, 0) from None
        return format_program(program, _layer(layer))
    compiled = compile_filter(text, layer)
    with recursion_room():
        return format_program(compiled.program, compiled.layer)
