"""The error a bad filter raises: what went wrong and where."""

from __future__ import annotations


class FilterError(ValueError):
    """A filter that does not compile; `position` is a 0-based character index."""

    def __init__(self, message: str, position: int):
        super().__init__(message, position)
        self.message = message
        self.position = position

    def __str__(self) -> str:
        return f"{self.message} (at position {self.position})"


# The reference's own wording, so that messages read the same everywhere.
BAD_TOKEN = "Filter expression contains a bad token"
BAD_TOKEN_FOR_LAYER = "Filter expression contains a bad token for layer"
PARSE_ERROR = "Filter expression parse error"
INDEX_OUT_OF_BOUNDS = "Filter expression array index is out-of-bounds"
TOO_LONG = "Filter expression too long"
TOO_DEEP = "Filter expression too deep"
BAD_OBJECT = "Filter object is invalid"
