"""Chains of one kind of node: `a and b and c` as a list of its operands, and back."""

from __future__ import annotations

from .ast import And, Node


def chain(kind, parts: list) -> Node:
    result = parts[-1]
    for part in reversed(parts[:-1]):
        result = kind(part, result)
    return result


def flatten_and(node: Node) -> list[Node]:
    parts, stack = [], [node]
    while stack:
        current = stack.pop()
        if isinstance(current, And):
            stack += [current.right, current.left]
        else:
            parts.append(current)
    return parts
