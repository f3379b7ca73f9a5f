"""The names of the interfaces a capture store's rows were captured on, as the capturing side
knows them: a saved file names an interface only by the name it had where the packets were seen."""

from __future__ import annotations

import socket
from typing import Iterable, Mapping

# Longer than any interface name Linux (15 bytes) or Windows gives; a file may hold any name.
MAX_NAME = 256


def in_this_namespace(if_idx: int) -> str | None:
    """This process's network namespace's name for interface `if_idx`; None when it has none."""
    try:
        return socket.if_indextoname(if_idx)
    except (OSError, ValueError, OverflowError):
        return None


def checked_names(pairs: Iterable, where: str) -> dict[int, str]:
    """{if_idx: name} from [if_idx, name] pairs sent by a capture service; ValueError saying what is wrong."""
    names = {}
    for pair in pairs:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"{where}: {pair!r} is not an [index, name] pair"[:200])
        if_idx, name = pair
        if isinstance(if_idx, bool) or not isinstance(if_idx, int) or not 0 <= if_idx < 1 << 32:
            raise ValueError(f"{where}: interface index {if_idx!r} is not a 32-bit number"[:200])
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
            raise ValueError(f"{where}: the name of interface {if_idx} is not 1 to {MAX_NAME} characters"[:200])
        names[if_idx] = name
    return names


class InterfaceNames:
    """(host, if_idx) -> name. An interface named two ways since the store was last emptied (a demo
    network's, then this host's) keeps no name: its rows could be of either."""

    def __init__(self) -> None:
        self._names: dict[tuple[int, int], str | None] = {}

    def learn(self, names: Mapping[int, str], host: int = 0) -> None:
        for if_idx, name in names.items():
            key = (host, int(if_idx))
            self._names[key] = name if self._names.get(key, name) == name else None

    def name(self, if_idx: int, host: int = 0) -> str | None:
        return self._names.get((host, if_idx))

    def clear(self) -> None:
        self._names.clear()
