"""Whether a filter can match when one field has a known value (WinDivertCondExecFilter).

Tests on that field are decided; every other test may go either way. A
backend uses it to learn which events a filter can select, and so which
kernel hooks it needs.
"""

from __future__ import annotations

from .ast import And, Cond, Const, Node, Or, Test
from .simplify import constant_result


def possible(tree: Node, field: str, value: int) -> bool:
    """False only when `tree` is false for every event whose `field` equals `value`."""
    return _eval(tree, field, value) is not False


def _eval(node: Node, field: str, value: int) -> bool | None:
    if isinstance(node, Const):
        return node.value
    if isinstance(node, Test):
        if node.field != field or node.index is not None:
            return None
        return constant_result(node.op, node.value, value, value)
    if isinstance(node, And):
        left, right = _eval(node.left, field, value), _eval(node.right, field, value)
        if left is False or right is False:
            return False
        return True if left and right else None
    if isinstance(node, Or):
        left, right = _eval(node.left, field, value), _eval(node.right, field, value)
        if left or right:
            return True
        return False if left is False and right is False else None
    if isinstance(node, Cond):
        test = _eval(node.test, field, value)
        if test is not None:
            return _eval(node.then if test else node.otherwise, field, value)
        then, otherwise = _eval(node.then, field, value), _eval(node.otherwise, field, value)
        return then if then == otherwise else None
    raise TypeError(f"not a filter node: {node!r}")
