"""The interface a Divert handle drives; every packet source implements it."""

from __future__ import annotations

import abc
from typing import NamedTuple

from divertgui.engine.address import Address, Flag, Layer, Param


class Captured(NamedTuple):
    raw: bytes
    address: Address
    # Identifies the kernel's pending verdict for this packet; 0 when nothing
    # waits for one (sniffed copies, replayed packets).
    ticket: int


class Backend(abc.ABC):
    """A source and sink of packets with WinDivert's semantics.

    A diverted packet is out of the stack until `verdict(ticket, raw)` puts
    it back (raw = the bytes to send, possibly modified) or drops it
    (raw = None). A packet with no pending verdict goes back through `inject`.

    The abstract methods are what every backend does; the others have
    defaults that a backend overrides when it can do better, and the
    attributes below say what it can do beyond them.
    """

    name = "backend"
    # Diverts the machine's real traffic or events: such handles are entered in
    # the machine's handle registry (REFLECT, `divert list`).
    registered = False
    # The most bytes `verdict` can put in place of a diverted packet (None: IP's
    # limits only), and what sets that limit, for the error that names it.
    max_edited_size: int | None = None
    max_edited_size_reason = ""
    # Releases received packets unchanged without handing them over (`pass_batch`).
    passes_batches = False
    # Makes its own packets, at a rate `set_rate` changes (the demo network).
    paced = False
    # A source with an end (a replayed file) says so once it has handed over its last packet.
    finished = False

    @abc.abstractmethod
    def open(self, filter, layer: Layer, priority: int, flags: Flag, params: dict[Param, int]) -> None:
        """Start diverting what `filter` (a compiled Filter; None for everything, at a source
        that makes its own packets) matches."""

    @abc.abstractmethod
    def recv_batch(self, max_count: int, timeout: float | None) -> list[Captured]:
        """Up to max_count packets; [] when `timeout` seconds pass first (None waits)."""

    @abc.abstractmethod
    def verdict(self, ticket: int, raw: bytes | None) -> None:
        """Release a diverted packet with these bytes, or drop it (raw=None)."""

    def verdict_many(self, verdicts: list[tuple[int, bytes | None]]) -> None:
        """`verdict(ticket, raw)` for each pair, in order."""
        for ticket, raw in verdicts:
            self.verdict(ticket, raw)

    def pass_batch(self, max_count: int, timeout: float | None) -> int:
        """Release up to max_count diverted packets unchanged; how many (only when `passes_batches`)."""
        raise NotImplementedError(f"the {self.name} backend cannot pass packets without receiving them")

    @abc.abstractmethod
    def inject(self, raw: bytes, address: Address) -> None:
        """Send a packet that has no pending verdict (new or duplicated)."""

    def set_param(self, param: Param, value: int) -> None:
        pass

    def shutdown(self, how: str) -> None:
        """how: "recv", "send" or "both"."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop; the network continues as if the backend had never been opened."""

    def set_rate(self, rate: float) -> None:
        """Packets per second, for a source that makes its own (only when `paced`)."""
        raise NotImplementedError(f"the {self.name} backend makes no packets of its own")

    def stats(self) -> dict[str, int]:
        return {}

    def fileno(self) -> int | None:
        """The descriptor that becomes readable when recv_batch may have packets (the
        NFQUEUE/NFLOG netlink socket, the eBPF ring buffer, ...); recv_batch with a zero
        timeout then reads them. None, the default, is for sources whose packets fall due
        on a clock (the demo network, replayed files): async receivers look again often."""
        return None
