"""The capture services' hosts a store's rows came from, by small index."""

from __future__ import annotations

import threading

MAX_HOSTS = 255      # the store's host column is one byte; index 0 is the window's own session


class HostList:
    """Index 0 is the window's own session (no service, or rows from before any host was named);
    every connection to a capture service adds an index of its own, named uniquely."""

    def __init__(self) -> None:
        self._names = [""]
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._names)

    def add(self, name: str) -> int:
        """A new index for a connection to `name`; a name already taken gets a number: "web (2)"."""
        with self._lock:
            if len(self._names) > MAX_HOSTS:
                raise ValueError(f"a window holds at most {MAX_HOSTS} capture services")
            unique, number = name, 1
            while unique in self._names:
                number += 1
                unique = f"{name} ({number})"
            self._names.append(unique)
            return len(self._names) - 1

    def name(self, index: int) -> str:
        return self._names[index] if 0 <= index < len(self._names) else ""

    def index_of(self, name: str) -> int | None:
        """The index named `name`, None when no host has that name."""
        return self._names.index(name) if name and name in self._names else None

    def names(self) -> list[str]:
        return list(self._names)
