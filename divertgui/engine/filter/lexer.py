"""Filter text to tokens, with the reference tokenizer's decisions and errors.

A token is (kind, position, text, value). Kinds: "field" (text names it),
"true", "false", "and", "or", "not", "number" (value set; macros valid at
the layer arrive as numbers), "macro" (a macro not valid at this layer),
"bytes" (the `b` suffix of an index), the symbols ( ) [ ] - ? : == != < <=
> >=, and "end".
"""

from __future__ import annotations

from typing import NamedTuple

from ..address import Layer
from . import errors
from .errors import FilterError
from .fields import FIELDS, MACROS
from .suggest import suggest_name
from ..address_text import IPV4_MAPPED, parse_ipv4, parse_ipv6, read_decimal, read_hex

MAX_TOKENS = 1278           # the reference's token array, minus its end marker
MAX_WORD = 40               # a word of this many characters or more is refused
_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:_")
_SPACE = frozenset(" \t\n\r\f\v")
_KEYWORDS = {"and": "and", "or": "or", "not": "not", "true": "true", "false": "false"}


class Token(NamedTuple):
    kind: str
    position: int
    text: str = ""
    value: int = 0


def tokenize(text: str, layer: Layer) -> list[Token]:
    # The reference reads a C string: a NUL ends the filter.
    text = text.split("\0", 1)[0]
    tokens: list[Token] = []
    i, n = 0, len(text)
    while True:
        if len(tokens) >= MAX_TOKENS:
            raise FilterError(errors.TOO_LONG, i)
        while i < n and text[i] in _SPACE:
            i += 1
        if i >= n:
            tokens.append(Token("end", i))
            return tokens
        start, c = i, text[i]
        i += 1
        nxt = text[i] if i < n else ""
        if c in "()[]-?":
            tokens.append(Token(c, start))
            continue
        if c == "!":
            if nxt == "=":
                i += 1
                tokens.append(Token("!=", start))
            else:
                tokens.append(Token("not", start))
            continue
        if c == "=":
            if nxt == "=":
                i += 1
            tokens.append(Token("==", start))
            continue
        if c in "<>":
            if nxt == "=":
                i += 1
                tokens.append(Token(c + "=", start))
            else:
                tokens.append(Token(c, start))
            continue
        if c == ":" and nxt != ":":
            tokens.append(Token(":", start))
            continue
        if c in "&|":
            i += 1
            if nxt != c:
                raise FilterError(errors.BAD_TOKEN, i - 1)
            tokens.append(Token("and" if c == "&" else "or", start))
            continue
        if c not in _WORD_CHARS:
            raise FilterError(errors.BAD_TOKEN, i)
        length = 1
        while length < MAX_WORD and i < n and text[i] in _WORD_CHARS:
            i += 1
            length += 1
        if length >= MAX_WORD:
            raise FilterError(errors.BAD_TOKEN, i - length)
        word = text[start:i]
        # A single trailing colon belongs to the conditional, not to the word;
        # the reference then reports errors in the word one character early.
        error_at = start
        if word.endswith(":") and not word.endswith("::"):
            word = word[:-1]
            i -= 1
            error_at = max(start - 1, 0)
        try:
            tokens.extend(_word_tokens(word, start, error_at, layer))
        except FilterError as exc:
            if exc.message == errors.BAD_TOKEN:
                value_expected = bool(tokens) and tokens[-1].kind in _VALUE_BEFORE
                exc.suggestion = suggest_name(word, layer, value_expected)
            raise


_VALUE_BEFORE = frozenset({"==", "!=", "<", "<=", ">", ">=", "-"})


def _word_tokens(word: str, start: int, error_at: int, layer: Layer) -> list[Token]:
    if word in _KEYWORDS:
        return [Token(_KEYWORDS[word], start, word)]
    spec = FIELDS.get(word)
    if spec is not None:
        if layer not in spec.layers:
            raise FilterError(errors.BAD_TOKEN_FOR_LAYER, error_at)
        return [Token("field", start, word)]
    if word in MACROS:
        values = MACROS[word]
        if layer in values:
            return [Token("number", start, word, values[layer])]
        return [Token("macro", start, word)]
    if word == "b":
        return []  # the reference drops a lone `b`
    decimal = read_decimal(word)
    if decimal is not None:
        value, length = decimal
        if length == len(word):
            return [Token("number", start, word, value)]
        if word[length:] == "b":
            # The reference leaves this token's position unset; it reads as 0.
            return [Token("number", start, word, value), Token("bytes", 0, "b")]
    if word.startswith("0x"):
        hexadecimal = read_hex(word, prefix=True)
        if hexadecimal is not None and hexadecimal[1] == len(word):
            return [Token("number", start, word, hexadecimal[0])]
    ipv4 = parse_ipv4(word)
    if ipv4 is not None:
        return [Token("number", start, word, IPV4_MAPPED | ipv4)]
    ipv6 = parse_ipv6(word)
    if ipv6 is not None:
        return [Token("number", start, word, ipv6)]
    raise FilterError(errors.BAD_TOKEN, error_at)
