"""Each header fact is written once, in engine/header_fields.py: no other module of the
package names a protocol number or a header length of its own, or lists the IPv6
extension headers WinDivert walks."""

from __future__ import annotations

import ast
import os
import re

from divertgui.engine import header_fields

PACKAGE = os.path.dirname(os.path.dirname(header_fields.__file__))
TABLE = os.path.abspath(header_fields.__file__)
EXTENSIONS = set(header_fields.IPV6_EXTENSION_HEADERS)
# A name that says it holds a header fact.
FACT_NAME = re.compile(r"^_?(IPPROTO_\w+|\w*HEADER_(LEN|MIN)|IPV6_EXT\w*)$")


def _parse(path: str) -> ast.Module:
    with open(path, encoding="utf-8") as source:
        return ast.parse(source.read(), path)


def _modules() -> dict[str, ast.Module]:
    found = {}
    for folder, _dirs, files in os.walk(PACKAGE):
        for name in files:
            path = os.path.join(folder, name)
            if name.endswith(".py") and os.path.abspath(path) != TABLE:
                found[os.path.relpath(path, PACKAGE)] = _parse(path)
    return found


MODULES = _modules()


def _protocol(element) -> int | None:
    """The protocol number an element is written as: a number or a name from the table."""
    if isinstance(element, ast.Constant) and type(element.value) is int:
        return element.value
    name = element.id if isinstance(element, ast.Name) else element.attr if isinstance(element, ast.Attribute) else ""
    value = getattr(header_fields, name, None) if name.startswith("IPPROTO_") else None
    return value if isinstance(value, int) else None


def _extension_lists(tree: ast.Module) -> list[int]:
    """Lines of the sets, tuples and lists in `tree` made of three or more different IPv6
    extension headers and nothing else: the walk's list, written again."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Set, ast.Tuple, ast.List)):
            protocols = [_protocol(element) for element in node.elts]
            if len(set(protocols)) >= 3 and all(protocol in EXTENSIONS for protocol in protocols):
                lines.append(node.lineno)
    return sorted(lines)


def test_the_check_finds_a_list_of_extension_headers_however_written():
    assert EXTENSIONS >= {header_fields.IPPROTO_HOPOPTS, header_fields.IPPROTO_ROUTING,
                          header_fields.IPPROTO_FRAGMENT, header_fields.IPPROTO_DSTOPTS}
    assert _extension_lists(ast.parse("P in (0, 43, 60)\nQ = [IPPROTO_HOPOPTS, h.IPPROTO_AH, 44]\n"
                                      "R = {0, 43, 17}\nS = (0, 43)")) == [1, 2]
    assert len(MODULES) > 50


def test_no_other_module_lists_the_ipv6_extension_headers():
    copies = [f"{path}:{line}" for path, tree in MODULES.items() for line in _extension_lists(tree)]
    assert copies == []


def test_no_other_module_gives_a_protocol_number_or_header_length_a_value():
    copies = []
    for path, tree in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                names = [target.id for target in node.targets if isinstance(target, ast.Name)]
                copies += [f"{path}:{node.lineno} {name}" for name in names if FACT_NAME.match(name)]
    assert copies == []
