"""Chains of one kind of node: `a and b and c` as a list of its operands, and back."""

from __future__ import annotations

from .ast import And, Node


def chain(kind, parts: list) -> Node:
    result = parts[-1]
    for part in reversed(parts[:-1]):
        result = kind(part, result)
    return result


def flatten(kind, node: Node) -> list[Node]:
    """The operands of a chain of `kind` (And or Or), left to right."""
    parts, stack = [], [node]
    while stack:
        current = stack.pop()
        if isinstance(current, kind):
            stack += [current.right, current.left]
        else:
            parts.append(current)
    return parts


def flatten_and(node: Node) -> list[Node]:
    return flatten(And, node)
