"""Tokens to the reference's expression tree, with its errors and limits.

The shape mirrors WinDivert's recursive-descent parser: `and` groups to the
left, `or` to the right, `not` only before a test, the conditional only in
parentheses. Tests are folded as they are built (simplify.test). Errors are
recorded the way the reference records them: the last error set wins, and a
group that fails inside parentheses reports a parse error at the token where
it stopped.

    FILTER := AND { or FILTER }           (right-nested)
    AND    := ARG { and ARG }             (left-nested)
    ARG    := ( FILTER ) | ( FILTER ? FILTER : FILTER ) | TEST
    TEST   := { not } VAR [ op [ - ] NUMBER ]
    VAR    := field | true | false | indexfield [ [ - ] NUMBER [ b ] ]
"""

from __future__ import annotations

import contextlib
import sys

from ..address import Layer
from . import errors, simplify
from .ast import NEGATED_OP, And, Cond, Or
from .errors import FilterError
from .fields import FIELDS, INDEX_MAX, INDEX_WORD_MAX
from .lexer import Token, tokenize

MAX_DEPTH = 1024
_COMPARISONS = {"==", "!=", "<", "<=", ">", ">="}


@contextlib.contextmanager
def recursion_room(frames: int = 6000):
    """Deep but legal filters recurse a few thousand Python frames deep.

    The limit is raised and left raised: lowering it again could break
    another thread compiling at the same time, and Python-level recursion
    does not consume the C stack in this interpreter.
    """
    if sys.getrecursionlimit() < frames:
        sys.setrecursionlimit(frames)
    yield


def parse(text: str, layer: Layer = Layer.NETWORK):
    """The reference-shaped tree of `text` (tests folded, and/or/conditional kept as written)."""
    if text.startswith("@"):
        # The reference reads text starting with '@' as a compiled filter object.
        raise FilterError(errors.BAD_OBJECT, 0)
    tokens = tokenize(text, layer)
    parser = _Parser(tokens)
    with recursion_room():
        tree = parser.filter(MAX_DEPTH, and_=False)
    if tree is None or parser.error is not None and parser.broken:
        raise FilterError(*parser.error)
    if parser.token.kind != "end":
        raise FilterError(errors.PARSE_ERROR, parser.token.position)
    return tree


class _Parser:
    def __init__(self, tokens: list[Token]):
        self.tokens = tokens
        self.i = 0
        self.error: tuple[str, int] | None = None
        # Set when a conditional was built around a failed condition: the
        # reference would go on and crash; this parser reports the error.
        self.broken = False

    @property
    def token(self) -> Token:
        return self.tokens[self.i]

    def fail(self, message: str, position: int):
        self.error = (message, position)
        return None

    def filter(self, depth: int, and_: bool):
        if depth < 0:
            return self.fail(errors.TOO_DEEP, self.token.position)
        depth -= 1
        expr = self.argument(depth) if and_ else self.filter(depth, and_=True)
        while True:
            if expr is None:
                return None
            kind = self.token.kind
            if kind == "and":
                self.i += 1
                arg = self.argument(depth)
                expr = And(expr, arg) if arg is not None else None
            elif kind == "or":
                self.i += 1
                arg = self.filter(depth, and_=True)
                expr = Or(expr, arg) if arg is not None else None
            else:
                return expr

    def argument(self, depth: int):
        if depth < 0:
            return self.fail(errors.TOO_DEEP, self.token.position)
        depth -= 1
        if self.token.kind != "(":
            return self.test()
        self.i += 1
        inner = self.filter(depth, and_=False)
        if self.token.kind == ")":
            self.i += 1
            return inner
        if self.token.kind == "?":
            self.i += 1
            then = self.filter(depth, and_=False)
            if then is None:
                return None
            if self.token.kind != ":":
                return self.fail(errors.PARSE_ERROR, self.token.position)
            self.i += 1
            otherwise = self.filter(depth, and_=False)
            if otherwise is None:
                return None
            if self.token.kind != ")":
                return self.fail(errors.PARSE_ERROR, self.token.position)
            self.i += 1
            if inner is None:
                self.broken = True
                return simplify.FALSE
            return Cond(inner, then, otherwise)
        return self.fail(errors.PARSE_ERROR, self.token.position)

    def test(self):
        negated = False
        while self.token.kind == "not":
            negated = not negated
            self.i += 1
        token = self.token
        index = None
        if token.kind in ("true", "false"):
            name = token.kind
            self.i += 1
        elif token.kind == "field":
            name = token.text
            self.i += 1
            size = FIELDS[name].index_size
            if size:
                index = self.index(size)
                if index is None:
                    return None
        else:
            return self.fail(errors.PARSE_ERROR, token.position)
        if self.token.kind not in _COMPARISONS:
            return simplify.test(name, "==" if negated else "!=", 0, index)
        op = self.token.kind
        if negated:
            op = NEGATED_OP[op]
        self.i += 1
        signed = self.signed_number()
        if signed is None:
            return None
        negative, value = signed
        self.i += 1
        return simplify.test(name, op, -value if negative else value, index)

    def signed_number(self) -> tuple[bool, int] | None:
        """An optional `-`, consumed, then the number token under the cursor (left for the caller)."""
        negative = self.token.kind == "-"
        if negative:
            self.i += 1
        if self.token.kind != "number":
            return self.fail(errors.PARSE_ERROR, self.token.position)
        return negative, self.token.value

    def index(self, size: int) -> int | None:
        if self.token.kind != "[":
            return self.fail(errors.PARSE_ERROR, self.token.position)
        self.i += 1
        signed = self.signed_number()
        if signed is None:
            return None
        negative, number = signed
        if number > INDEX_WORD_MAX:
            return self.fail(errors.INDEX_OUT_OF_BOUNDS, self.token.position)
        self.i += 1
        if self.token.kind == "bytes":
            self.i += 1
        else:
            number *= size
        if (not negative and number > INDEX_MAX - size) or (negative and not size <= number <= INDEX_MAX):
            return self.fail(errors.INDEX_OUT_OF_BOUNDS, self.token.position)
        if self.token.kind != "]":
            return self.fail(errors.PARSE_ERROR, self.token.position)
        self.i += 1
        return -number if negative else number
