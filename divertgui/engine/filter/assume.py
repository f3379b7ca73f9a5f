"""Whether a filter can match when fields have known values (WinDivertCondExecFilter).

Tests on that field are decided; every other test may go either way. A
backend uses it to learn which events a filter can select, and so which
kernel hooks it needs.
"""

from __future__ import annotations

from .ast import And, Cond, Const, Node, Or, Test
from .simplify import constant_result


def possible(tree: Node, field: str, value: int) -> bool:
    """False only when `tree` is false for every event whose `field` equals `value`."""
    return _eval(tree, {field: value}) is not False


def possible_with(tree: Node, known: dict[str, int]) -> bool:
    """False only when `tree` is false for every event whose fields have the `known` values."""
    return _eval(tree, known) is not False


def _eval(node: Node, known: dict[str, int]) -> bool | None:
    if isinstance(node, Const):
        return node.value
    if isinstance(node, Test):
        if node.field not in known or node.index is not None:
            return None
        value = known[node.field]
        return constant_result(node.op, node.value, value, value)
    if isinstance(node, And):
        left, right = _eval(node.left, known), _eval(node.right, known)
        if left is False or right is False:
            return False
        return True if left and right else None
    if isinstance(node, Or):
        left, right = _eval(node.left, known), _eval(node.right, known)
        if left or right:
            return True
        return False if left is False and right is False else None
    if isinstance(node, Cond):
        test = _eval(node.test, known)
        if test is not None:
            return _eval(node.then if test else node.otherwise, known)
        then, otherwise = _eval(node.then, known), _eval(node.otherwise, known)
        return then if then == otherwise else None
    raise TypeError(f"not a filter node: {node!r}")
