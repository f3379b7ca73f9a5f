"""Filter text to a folded syntax tree (see ast.py), with the reference's errors.

    FILTER := OR
    OR     := AND { (or | ||) AND }
    AND    := TEST { (and | &&) TEST }
    TEST   := ( FILTER [ ? FILTER : FILTER ] ) | { not | ! } (true | false | FIELD [ op VALUE ])
"""

from __future__ import annotations

import re

from ..address import Layer
from . import errors, simplify
from .ast import NEGATED_OP
from .errors import FilterError
from .fields import FIELDS, INDEX_MAX, MACROS
from .lexer import Token, tokenize
from .values import parse_value

MAX_LENGTH = 16 * 1024      # characters
MAX_DEPTH = 64              # nested parentheses
MAX_TESTS = 1024
_COMPARISONS = {"==": "==", "=": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_INDEX = re.compile(r"(0[xX][0-9a-fA-F]{0,8}|[0-9]{1,10})(b?)\Z")
_WORD_KINDS = ("and", "or", "not", "true", "false")


def parse(text: str, layer: Layer = Layer.NETWORK):
    if not isinstance(text, str):
        raise FilterError("Filter expression is not text", 0)
    if len(text) > MAX_LENGTH:
        raise FilterError(errors.TOO_LONG, MAX_LENGTH)
    tokens = [_classify(token, layer) for token in tokenize(text)]
    return _Parser(tokens, layer).parse()


def _classify(token: Token, layer: Layer) -> Token:
    if token.kind != "word":
        return token
    if token.text in _WORD_KINDS:
        return Token(token.text, token.text, token.position)
    spec = FIELDS.get(token.text)
    if spec is not None:
        if layer not in spec.layers:
            raise FilterError(errors.BAD_TOKEN_FOR_LAYER, token.position)
        return Token("field", token.text, token.position)
    if token.text in MACROS:
        return Token("macro", token.text, token.position)
    if parse_value(token.text) is not None or _INDEX.match(token.text):
        return Token("literal", token.text, token.position)
    raise FilterError(errors.BAD_TOKEN, token.position)


class _Parser:
    def __init__(self, tokens: list[Token], layer: Layer):
        self.tokens = tokens
        self.layer = layer
        self.i = 0
        self.tests = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        token = self.tokens[self.i]
        if token.kind != "end":
            self.i += 1
        return token

    def fail(self, token: Token | None = None):
        raise FilterError(errors.PARSE_ERROR, (token or self.token).position)

    def expect(self, kind: str) -> Token:
        if self.token.kind != kind:
            self.fail()
        return self.advance()

    def parse(self):
        node = self.parse_or(0)
        if self.token.kind != "end":
            self.fail()
        return node

    def parse_or(self, depth: int):
        node = self.parse_and(depth)
        while self.token.kind == "or":
            self.advance()
            node = simplify.or_(node, self.parse_and(depth))
        return node

    def parse_and(self, depth: int):
        node = self.parse_test(depth)
        while self.token.kind == "and":
            self.advance()
            node = simplify.and_(node, self.parse_test(depth))
        return node

    def parse_test(self, depth: int):
        token = self.token
        if token.kind == "(":
            if depth >= MAX_DEPTH:
                raise FilterError(errors.TOO_DEEP, token.position)
            self.advance()
            try:
                inner = self.parse_or(depth + 1)
            except FilterError as exc:
                # The reference reports a bad index inside a group as a parse error.
                if exc.message == errors.INDEX_OUT_OF_BOUNDS:
                    raise FilterError(errors.PARSE_ERROR, exc.position) from None
                raise
            if self.token.kind == "?":
                self.advance()
                then = self.parse_or(depth + 1)
                self.expect(":")
                otherwise = self.parse_or(depth + 1)
                self.expect(")")
                return simplify.cond(inner, then, otherwise)
            self.expect(")")
            return inner
        negated = False
        while self.token.kind == "not":
            negated = not negated
            self.advance()
        token = self.advance()
        if token.kind in ("true", "false"):
            return simplify.Const((token.kind == "true") != negated)
        if token.kind != "field":
            self.fail(token)
        self.tests += 1
        if self.tests > MAX_TESTS:
            raise FilterError(errors.TOO_LONG, token.position)
        spec = FIELDS[token.text]
        index = self.parse_index(spec.index_size) if spec.index_size else None
        if self.token.kind in _COMPARISONS:
            op = _COMPARISONS[self.advance().kind]
            value = self.parse_value()
        else:
            op, value = "!=", 0
        if negated:
            op = NEGATED_OP[op]
        return simplify.test(token.text, op, value, index)

    def parse_index(self, size: int) -> int:
        self.expect("[")
        negative = False
        if self.token.kind == "-":
            negative = True
            self.advance()
        word = self.token
        match = _INDEX.match(word.text) if word.kind == "literal" else None
        if match is None:
            self.fail()
        self.advance()
        close = self.expect("]")
        digits = match.group(1)
        number = int(digits[2:] or "0", 16) if digits[:2].lower() == "0x" else int(digits)
        offset = number if match.group(2) else number * size
        if negative:
            if not size <= offset <= INDEX_MAX:
                raise FilterError(errors.INDEX_OUT_OF_BOUNDS, close.position)
            return -offset
        if offset > INDEX_MAX - size:
            raise FilterError(errors.INDEX_OUT_OF_BOUNDS, close.position)
        return offset

    def parse_value(self) -> int:
        negative = False
        if self.token.kind == "-":
            negative = True
            self.advance()
        token = self.advance()
        if token.kind == "macro":
            value, layers = MACROS[token.text]
            if self.layer not in layers:
                self.fail(token)
        elif token.kind == "literal":
            value = parse_value(token.text)
            if value is None:
                raise FilterError(errors.BAD_TOKEN, token.position)
        else:
            self.fail(token)
        return -value if negative else value
