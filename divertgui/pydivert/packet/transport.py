"""The payload of a TCP or UDP header: the engine packet's, whose setter keeps the lengths right."""

from __future__ import annotations


class TransportPayload:
    __slots__ = ()

    @property
    def payload(self) -> bytes:
        return self._packet._packet.payload

    @payload.setter
    def payload(self, value) -> None:
        self._packet._packet.payload = bytes(value)
        self._packet._invalidate_checksums()

    @property
    def payload_len(self) -> int:
        return len(self.payload)
