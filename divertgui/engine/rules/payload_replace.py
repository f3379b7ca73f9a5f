"""Payload find/replace: rewrite bytes in payloads; TCP connections survive length changes."""

from __future__ import annotations

import re

from divertgui.engine.rules.base import Param, Rule, RuleError
from divertgui.engine.rules.seq_adjust import SeqAdjuster
from divertgui.engine.tcp_split import set_oversized_tcp_payload


def compile_pattern(find: str, replace: str, mode: str, where: str):
    """(compiled bytes regex, replacement bytes) for the three ways of writing them."""
    try:
        if mode == "hex":
            find_bytes, replace_bytes = bytes.fromhex(find), bytes.fromhex(replace)
            return re.compile(re.escape(find_bytes)), replace_bytes.replace(b"\\", b"\\\\")
        find_bytes, replace_bytes = find.encode("utf-8"), replace.encode("utf-8")
        if mode == "text":
            return re.compile(re.escape(find_bytes)), replace_bytes.replace(b"\\", b"\\\\")
        return re.compile(find_bytes, re.DOTALL), replace_bytes
    except (ValueError, re.error) as exc:
        raise RuleError(f"{mode} pattern {find!r} -> {replace!r}: {exc}", where) from exc


class PayloadReplace(Rule):
    """Replace `find` with `replace` in the payload of matching packets.

    mode "text": literal UTF-8 text; "hex": literal bytes written in hex
    ("de ad be ef"); "regex": a Python regular expression over the bytes, the
    replacement may use \\1 or \\g<name>. `count` limits replacements per
    packet (0: all). A pattern is matched within one packet, not across them.

    When a TCP segment changes length, the sequence numbers of the rest of that
    direction and the acknowledgements (and SACK blocks) of the other one are
    shifted to match, for every later packet of the connection, matching or not.
    A retransmitted segment gets the same edit again. Checksums are fixed.
    """

    kind = "payload_replace"
    rewrites = True
    params = {
        "find": Param(""),
        "replace": Param(""),
        "mode": Param("text", choices=("text", "hex", "regex")),
        "count": Param(0, 0, 1_000_000),
    }

    # Connections already resized keep their sequence offsets, or they would break.
    carried = ("connections",)

    def setup(self) -> None:
        if not self.find:
            raise RuleError("nothing to find: `find` is empty", f"{self.kind}.find")
        self._pattern, self._replacement = compile_pattern(self.find, self.replace, self.mode,
                                                           f"{self.kind}.find")
        self.connections = SeqAdjuster()
        self.counters["seq_adjusted"] = 0
        self.counters["send_failed"] = 0

    def process(self, packet, now_ns: int, out: list) -> None:
        tcp = packet.tcp
        if tcp is None:
            if self._replace_datagram(packet):
                out.append(packet)
            return
        key = SeqAdjuster.key(packet)
        original_seq = tcp.seq_num
        payload = packet.payload or b""
        changed = False
        new_payload, replaced = self._pattern.subn(self._replacement, payload, count=self.count)
        if replaced and new_payload != payload:
            if not self._set_payload(packet, new_payload):
                return
            changed = True
            self.counters["modified"] += 1
            if len(new_payload) != len(payload):
                self.connections.record(key, original_seq, len(payload), len(new_payload) - len(payload))
        self._adjust(packet, key, original_seq, changed)
        out.append(packet)

    def _set_payload(self, packet, payload: bytes) -> bool:
        """Whether the packet took the new payload. A TCP segment IP cannot carry takes it
        and is split when sent; any other such packet is dropped and counted (as
        send_failed): letting it go unedited would break the rule."""
        try:
            packet.payload = payload
        except ValueError:
            if set_oversized_tcp_payload(packet, payload):
                return True
            self.counters["dropped"] += 1
            self.counters["send_failed"] += 1
            return False
        return True

    def observe(self, packet) -> None:
        tcp = packet.tcp
        if tcp is None:
            return
        key = SeqAdjuster.key(packet)
        if self.connections.tracked(key):
            self._adjust(packet, key, tcp.seq_num, False)

    def _adjust(self, packet, key: tuple, original_seq: int, changed: bool) -> None:
        if self.connections.tracked(key) and self.connections.adjust(packet, key, original_seq):
            self.counters["seq_adjusted"] += 1
            changed = True
        if changed:
            packet.recalculate_checksums()

    def _replace_datagram(self, packet) -> bool:
        """Whether the datagram goes on (edited or not)."""
        payload = packet.payload
        if not payload:
            return True
        new_payload, replaced = self._pattern.subn(self._replacement, payload, count=self.count)
        if replaced and new_payload != payload:
            if not self._set_payload(packet, new_payload):
                return False
            packet.recalculate_checksums()
            self.counters["modified"] += 1
        return True
