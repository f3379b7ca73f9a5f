"""The service's wire format: length-prefixed frames on one byte stream.

    frame = length (4 bytes, big-endian, of what follows) + kind (1 byte) + body

Kinds: JSON carries one command or event (UTF-8 JSON object); the binary
kinds carry the store's rows (divertgui.service.packet_frames). A reader
refuses a frame longer than its limit before reading its body, so a peer
cannot make it hold more than that.
"""

from __future__ import annotations

import json
import math
import struct

JSON = ord("J")
PACKETS = ord("P")
VERDICTS = ord("V")
EDIT = ord("E")
CLEAR = ord("C")
KINDS = frozenset({JSON, PACKETS, VERDICTS, EDIT, CLEAR})

HEADER = struct.Struct(">IB")
MAX_COMMAND_FRAME = 1 << 20        # what a client may send: edited bytes as hex fit many times over
MAX_SERVICE_FRAME = 64 << 20       # what a service may send: one batch of packets with their bytes


class FrameError(ValueError):
    """A frame that breaks the format; the stream cannot be trusted past it."""


def encode(kind: int, body: bytes) -> bytes:
    return HEADER.pack(len(body) + 1, kind) + body


def encode_json(message: dict) -> bytes:
    return encode(JSON, json.dumps(message, separators=(",", ":"), allow_nan=False).encode())


def _no_constants(name: str):
    raise ValueError(f"{name} is not a JSON number")


def decode_json(body: bytes) -> dict:
    """The JSON object in a frame body; ValueError saying what is wrong."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 at byte {exc.start}") from None
    try:
        message = json.loads(text, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg} at character {exc.pos}") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if not isinstance(message, dict):
        raise ValueError(f"a message is a JSON object, not {type(message).__name__}")
    return message


class FrameReader:
    """Frames from a binary stream's `read`: (kind, body) pairs, until end of stream."""

    def __init__(self, read, limit: int):
        self._read = read
        self.limit = limit

    def _exactly(self, size: int, what: str) -> bytes | None:
        parts, missing = [], size
        while missing:
            chunk = self._read(missing)
            if not chunk:
                if missing == size and what == "header":
                    return None
                raise FrameError(f"the stream ended inside a frame's {what} "
                                 f"({size - missing} of {size} bytes)")
            parts.append(chunk)
            missing -= len(chunk)
        return b"".join(parts)

    def next(self) -> tuple[int, bytes] | None:
        """The next frame, None at a clean end of stream; FrameError for a broken one."""
        header = self._exactly(HEADER.size, "header")
        if header is None:
            return None
        length, kind = HEADER.unpack(header)
        if length < 1:
            raise FrameError("a frame's length is 0: it must count at least its kind byte")
        if length > self.limit:
            raise FrameError(f"a frame of {length} bytes is larger than the limit of {self.limit} bytes")
        if kind not in KINDS:
            raise FrameError(f"unknown frame kind {kind}")
        return kind, self._exactly(length - 1, "body") if length > 1 else b""

    def __iter__(self):
        while True:
            frame = self.next()
            if frame is None:
                return
            yield frame


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
