"""The error a bad filter raises: what went wrong and where."""

from __future__ import annotations


class FilterError(ValueError):
    """A filter that does not compile; `position` is a 0-based character index.

    `message` and `position` are the reference's own. `suggestion` is a name
    valid at the filter's layer that the bad word probably meant (a field,
    macro or keyword in the wrong case, or a near miss), or None.
    """

    def __init__(self, message: str, position: int, suggestion: str | None = None):
        super().__init__(message, position, suggestion)
        self.message = message
        self.position = position
        self.suggestion = suggestion

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
