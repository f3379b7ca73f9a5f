"""Splits filter text into tokens: (kind, text, position)."""

from __future__ import annotations

from typing import NamedTuple

from . import errors
from .errors import FilterError

KEYWORDS = {"and": "and", "&&": "and", "or": "or", "||": "or", "not": "not", "!": "not",
            "true": "true", "false": "false"}
OPERATORS = ("==", "!=", "<=", ">=", "&&", "||", "=", "<", ">", "!", "(", ")", "[", "]", "?", ":", "-")
_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.")
_HEX = frozenset("0123456789abcdefABCDEF")
_SPACE = frozenset(" \t\n\r\v\f")


class Token(NamedTuple):
    kind: str       # "word", an operator's text, or "end"
    text: str
    position: int


def tokenize(text: str):
    """Yields tokens; a consumer that checks each word as it comes reports the
    first bad token in text order, as the reference does."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in _SPACE:
            i += 1
            continue
        if c in _WORD or (c == ":" and i + 1 < n and text[i + 1] == ":"):
            start = i
            while i < n and (text[i] in _WORD or _continues_ipv6(text, i)):
                i += 1
            yield Token("word", text[start:i], start)
            continue
        for op in OPERATORS:
            if text.startswith(op, i):
                yield Token(KEYWORDS.get(op, op), op, i)
                i += len(op)
                break
        else:
            raise FilterError(errors.BAD_TOKEN, i + 1)  # the reference points just past it
    yield Token("end", "", n)


def _continues_ipv6(text: str, i: int) -> bool:
    """A ':' is part of an IPv6 address when a hex digit or another ':' follows it."""
    if text[i] != ":":
        return False
    if i > 0 and text[i - 1] == ":":
        return True
    return i + 1 < len(text) and (text[i + 1] in _HEX or text[i + 1] == ":")
