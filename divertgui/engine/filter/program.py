"""The reference's compiled form of a filter: a list of tests with jumps.

`flatten(tree)` lays the tree out exactly as WinDivertCompileFilter does:
each test has a success and a failure target, either the index of another
test (always a later one) or ACCEPT / REJECT; tests[0] runs first. The
reference refuses filters needing more than MAX_TESTS tests ("too long").
This form is also a convenient input for a kernel (BPF) translation: it is
already a jump table.
"""

from __future__ import annotations

from typing import NamedTuple

from . import errors
from .ast import And, Cond, Const, Node, Or, Test
from .errors import FilterError

MAX_TESTS = 256
ACCEPT, REJECT = -1, -2


class Step(NamedTuple):
    test: Test
    success: int    # index of the next test, ACCEPT or REJECT
    failure: int


class _TooLong(Exception):
    pass


def flatten(tree: Node) -> list[Step]:
    stack: list[tuple[Test, int, int]] = []

    def lay_out(node: Node, success: int, failure: int) -> int:
        # Returns the label where `node` starts; labels are push order.
        if isinstance(node, And):
            success = lay_out(node.right, success, failure)
            return lay_out(node.left, success, failure)
        if isinstance(node, Or):
            failure = lay_out(node.right, success, failure)
            return lay_out(node.left, success, failure)
        if isinstance(node, Cond):
            otherwise = lay_out(node.otherwise, success, failure)
            then = lay_out(node.then, success, failure)
            return lay_out(node.test, then, otherwise)
        if isinstance(node, Const):
            return success if node.value else failure
        if len(stack) >= MAX_TESTS:
            raise _TooLong
        stack.append((node, success, failure))
        return len(stack) - 1

    try:
        entry = lay_out(tree, ACCEPT, REJECT)
    except _TooLong:
        raise FilterError(errors.TOO_LONG, 0) from None
    if entry < 0:
        # A constant filter: the reference emits one always-true test.
        return [Step(Test("zero", "==", 0), entry, entry)]

    def target(label: int) -> int:
        return label if label < 0 else entry - label

    return [Step(stack[entry - i][0], target(stack[entry - i][1]), target(stack[entry - i][2]))
            for i in range(entry + 1)]
