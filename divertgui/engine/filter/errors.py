"""A bad filter's error shown to a person: what went wrong and where, with the
reference's own wording."""

from __future__ import annotations

from divertgui.engine.errors import FilterError


CONTEXT = 60    # characters of the filter shown each side of the position


def report_lines(text: str, error: FilterError) -> list[str]:
    """`error` shown in `text`: the message and position; the line around the
    position (at most CONTEXT characters each side, cut ends marked "...");
    a caret under the position; "did you mean" when there is a suggestion."""
    position = max(0, min(error.position, len(text)))
    line_start = text.rfind("\n", 0, position) + 1
    line_end = text.find("\n", position)
    line_end = len(text) if line_end < 0 else line_end
    start, end = max(line_start, position - CONTEXT), min(line_end, position + CONTEXT)
    before = ("..." if start > line_start else "") + "".join(map(_shown, text[start:position]))
    after = "".join(map(_shown, text[position:end])) + ("..." if end < line_end else "")
    caret = "".join("\t" if c == "\t" else " " for c in before) + "^"
    lines = [f"{error.message} (at position {position})", before + after, caret]
    if error.suggestion:
        lines.append(f"did you mean `{error.suggestion}`?")
    return lines


def report(text: str, error: FilterError, lead: str) -> str:
    """report_lines as one text: `lead` and the message, then the rest indented."""
    first, *rest = report_lines(text, error)
    return "\n  ".join([lead + first, *rest])


def _shown(char: str) -> str:
    """A character as printed: a byte that was not UTF-8 (Python keeps it as a lone
    surrogate) and a control character are escaped, so that the caret, counted in
    printed characters, stays under the position."""
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    if char != "\t" and not char.isprintable():
        return char.encode("unicode_escape").decode("ascii")
    return char


# The reference's own wording, so that messages read the same everywhere.
BAD_TOKEN = "Filter expression contains a bad token"
BAD_TOKEN_FOR_LAYER = "Filter expression contains a bad token for layer"
PARSE_ERROR = "Filter expression parse error"
INDEX_OUT_OF_BOUNDS = "Filter expression array index is out-of-bounds"
TOO_LONG = "Filter expression too long"
TOO_DEEP = "Filter expression too deep"
BAD_OBJECT = "Filter object is invalid"
