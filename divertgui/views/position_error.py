"""What is wrong in text the user typed, and where: said as "position N: ..." everywhere,
as the CLI and the filter boxes say it (N counts characters from 0)."""

from __future__ import annotations


class PositionError(ValueError):
    def __init__(self, message: str, position: int):
        super().__init__(f"position {position}: {message}")
        self.message = message
        self.position = position
