"""A folded syntax tree to the reference's canonical filter text."""

from __future__ import annotations

import ipaddress

from .ast import And, Cond, Const, Node, Or, Test
from .compiler import flatten
from .fields import BOOLEAN_FIELDS, EVENT_NAMES, FIELDS

_OP_TEXT = {"==": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


def _value_text(field: str, value: int) -> str:
    style = FIELDS[field].style
    if value < 0:
        # The reference writes the magnitude of a negative hex-styled value.
        return f"{-value:#x}" if style == "hex" else str(value)
    if style == "hex":
        return f"{value:#x}"
    if style in ("ipv4", "addr"):
        if 0xFFFF00000000 <= value <= 0xFFFFFFFFFFFF:
            return str(ipaddress.IPv4Address(value & 0xFFFFFFFF))
        return str(ipaddress.IPv6Address(value))
    if style == "event" and value in EVENT_NAMES:
        return EVENT_NAMES[value]
    return str(value)


def _test_text(node: Test) -> str:
    name = node.field
    if node.index is not None:
        name = f"{name}[{node.index}b]"
    elif name in BOOLEAN_FIELDS or name in ("loopback", "impostor"):
        if (node.op, node.value) in (("!=", 0), ("==", 1)):
            return name
        if (node.op, node.value) in (("==", 0), ("!=", 1)):
            return f"not {name}"
    return f"{name} {_OP_TEXT[node.op]} {_value_text(node.field, node.value)}"


def format_tree(tree: Node) -> str:
    return _format(tree, None)


def _format(node: Node, parent: type | None) -> str:
    if isinstance(node, Const):
        return "true" if node.value else "false"
    if isinstance(node, Test):
        return _test_text(node)
    if isinstance(node, Cond):
        return (f"({_format(node.test, Cond)}? {_format(node.then, Cond)}: "
                f"{_format(node.otherwise, Cond)})")
    joiner = " and " if isinstance(node, And) else " or "
    text = joiner.join(_format(part, type(node)) for part in flatten(node))
    if parent in (And, Or) and parent is not type(node):
        return f"({text})"
    return text
