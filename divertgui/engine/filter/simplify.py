"""Builds tree nodes the way the reference folds them.

A test that cannot fail, or cannot succeed, for any value in the field's
range becomes a constant, or a bare presence test for header fields: the
reference turns `tcp.DstPort < 0` into `not tcp` (so it is true for UDP
packets) and `tcp.DstPort <= 65535` into `tcp`. Constants in `and`, `or`
and the conditional fold away.
"""

from __future__ import annotations

from .ast import And, Cond, Const, Node, Or, Test
from .fields import FIELDS, effective_value

TRUE, FALSE = Const(True), Const(False)


def constant_result(op: str, value: int, lo: int, hi: int) -> bool | None:
    """The test's result when it is the same for every field value in [lo, hi]."""
    if op == "==":
        if value < lo or value > hi:
            return False
        return True if lo == hi == value else None
    if op == "!=":
        if value < lo or value > hi:
            return True
        return False if lo == hi == value else None
    if op == "<":
        return False if value <= lo else True if value > hi else None
    if op == "<=":
        return False if value < lo else True if value >= hi else None
    if op == ">":
        return False if value >= hi else True if value < lo else None
    return False if value > hi else True if value <= lo else None  # ">="


def test(field: str, op: str, value: int, index: int | None = None) -> Node:
    spec = FIELDS[field]
    if spec.lo is None:
        return Test(field, op, value, index)
    result = constant_result(op, value, spec.lo, spec.hi)
    if result is None:
        return Test(field, op, value, index)
    if spec.guard is None:
        return Const(result)
    return Test(spec.guard, "!=" if result else "==", 0)


def and_(left: Node, right: Node) -> Node:
    if isinstance(left, Const):
        return right if left.value else FALSE
    if isinstance(right, Const):
        return left if right.value else FALSE
    return And(left, right)


def or_(left: Node, right: Node) -> Node:
    if isinstance(left, Const):
        return TRUE if left.value else right
    if isinstance(right, Const):
        return TRUE if right.value else left
    return Or(left, right)


def simplified(tree: Node) -> Node:
    """`tree` with constants folded out of and/or/conditionals and each test's
    value replaced by the number the field is really compared with
    (fields.effective_value): the same filter, ready to evaluate."""
    if isinstance(tree, And):
        return and_(simplified(tree.left), simplified(tree.right))
    if isinstance(tree, Or):
        return or_(simplified(tree.left), simplified(tree.right))
    if isinstance(tree, Cond):
        return cond(simplified(tree.test), simplified(tree.then), simplified(tree.otherwise))
    if isinstance(tree, Test):
        return tree._replace(value=effective_value(tree.field, tree.value))
    return tree


def cond(test_: Node, then: Node, otherwise: Node) -> Node:
    if isinstance(test_, Const):
        return then if test_.value else otherwise
    if otherwise == FALSE:
        return and_(test_, then)
    if then == TRUE:
        return or_(test_, otherwise)
    return Cond(test_, then, otherwise)
