"""The filter's syntax tree, after layer checks and the reference's folding.

Four node kinds, all immutable:

- `Const(value)`: `true` / `false`.
- `Test(field, op, value, index)`: compares one field with a constant.
  `field` is a name from `fields.FIELDS` (`"tcp.DstPort"`, `"packet16"`...);
  `op` is one of `OPS`; `value` is a Python int, the number the field's
  value is compared with as plain integers (addresses are 128-bit numbers,
  IPv4 as `::ffff:a.b.c.d`; macros are replaced by their value; it may be
  negative). `index` is set only for index fields: a byte offset, counted
  from the start when >= 0 and from the end when < 0 (`packet32[-1]` has
  index -4). `not` never appears as a node: it is
  folded into the operator (`not tcp.DstPort == 80` is `tcp.DstPort != 80`),
  which keeps "a test on a missing header is false" true for negations too.
- `And(left, right)`, `Or(left, right)`.
- `Cond(test, then, otherwise)`: `(test ? then : otherwise)`.

A test on a header field is false when that header is absent
(`fields.FIELDS[name].guard` names the presence field: "tcp", "ip", ...).
An index test is false when the word lies outside the packet (or payload).
`Filter.tree` is folded: no constant appears below an and/or/conditional,
and a test the reference decides at compile time is already replaced (by a
constant, or by a presence test such as `tcp != 0`). The reference's raw
form, with values as written, is `Filter.program` (see program.py).
"""

from __future__ import annotations

from typing import NamedTuple, Union

OPS = ("==", "!=", "<", "<=", ">", ">=")
NEGATED_OP = {"==": "!=", "!=": "==", "<": ">=", ">=": "<", ">": "<=", "<=": ">"}


class Const(NamedTuple):
    value: bool


class Test(NamedTuple):
    __test__ = False  # not a pytest test class

    field: str
    op: str
    value: int
    index: int | None = None


class And(NamedTuple):
    left: "Node"
    right: "Node"


class Or(NamedTuple):
    left: "Node"
    right: "Node"


class Cond(NamedTuple):
    test: "Node"
    then: "Node"
    otherwise: "Node"


Node = Union[Const, Test, And, Or, Cond]


def walk(node: Node):
    """Every node, parents before children, without recursion."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        if isinstance(current, (And, Or)):
            stack.extend((current.right, current.left))
        elif isinstance(current, Cond):
            stack.extend((current.otherwise, current.then, current.test))
