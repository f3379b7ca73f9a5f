"""The name a bad filter word probably meant: for "did you mean ...?".

Only names valid at the filter's layer are offered. In order: the same name
in another case (`TCP.dstport`), another spelling of the protocol
(`ipv4.TTL`) or Wireshark's name for the field (`ip.src`), then the closest
name at most one edit away (two for longer words: `tcp.DstPrt`).
"""

from __future__ import annotations

from ..address import Layer
from .fields import FIELDS, MACROS

KEYWORDS = ("and", "or", "not", "true", "false")

# Other spellings of a protocol prefix.
PROTOCOL_ALIASES = {"ipv4": "ip", "ip4": "ip", "ip6": "ipv6", "icmp4": "icmp", "icmp6": "icmpv6"}

# Wireshark's display-filter names whose WinDivert names differ by more than case.
WIRESHARK_NAMES = {
    "ip.src": "ip.SrcAddr", "ip.dst": "ip.DstAddr", "ip.len": "ip.Length", "ip.proto": "ip.Protocol",
    "ip.hdr_len": "ip.HdrLength", "ip.dsfield": "ip.TOS", "ip.flags.df": "ip.DF", "ip.flags.mf": "ip.MF",
    "ip.frag_offset": "ip.FragOff",
    "ipv6.src": "ipv6.SrcAddr", "ipv6.dst": "ipv6.DstAddr", "ipv6.plen": "ipv6.Length",
    "ipv6.nxt": "ipv6.NextHdr", "ipv6.hlim": "ipv6.HopLimit", "ipv6.tclass": "ipv6.TrafficClass",
    "ipv6.flow": "ipv6.FlowLabel",
    "tcp.seq": "tcp.SeqNum", "tcp.ack": "tcp.AckNum", "tcp.hdr_len": "tcp.HdrLength",
    "tcp.len": "tcp.PayloadLength", "tcp.window_size": "tcp.Window", "tcp.urgent_pointer": "tcp.UrgPtr",
    "tcp.flags.syn": "tcp.Syn", "tcp.flags.ack": "tcp.Ack", "tcp.flags.fin": "tcp.Fin",
    "tcp.flags.reset": "tcp.Rst", "tcp.flags.push": "tcp.Psh", "tcp.flags.urg": "tcp.Urg",
    "frame.len": "length",
}


def suggest_name(word: str, layer: Layer, value_expected: bool = False) -> str | None:
    """The valid name `word` probably meant, or None; `value_expected` after a comparison."""
    names = _names(layer, value_expected)
    folded = word.casefold()
    exact = [name for name in names if name.casefold() == folded]
    if exact:
        return exact[0]
    wireshark = WIRESHARK_NAMES.get(folded)
    if wireshark in names:
        return wireshark
    prefix, dot, rest = folded.partition(".")
    if prefix in PROTOCOL_ALIASES:
        respelled = (PROTOCOL_ALIASES[prefix] + dot + rest).casefold()
        matches = [name for name in names if name.casefold() == respelled]
        if matches:
            return matches[0]
    room = 1 if len(word) <= 5 else 2
    best, best_distance = None, room + 1
    for name in names:
        distance = edit_distance(folded, name.casefold(), best_distance)
        if distance < best_distance:
            best, best_distance = name, distance
    return best


def _names(layer: Layer, value_expected: bool) -> list[str]:
    """Candidates in order of preference: what may stand here first."""
    macros = [name for name, values in MACROS.items() if layer in values]
    tests = [name for name, spec in FIELDS.items() if layer in spec.layers] + list(KEYWORDS)
    return macros + tests if value_expected else tests + macros


def edit_distance(a: str, b: str, limit: int) -> int:
    """Edits (insert, delete, replace, swap two neighbours) from a to b; `limit` once it reaches it."""
    if abs(len(a) - len(b)) >= limit:
        return limit
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cost = 0 if ca == cb else 1
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                row[j] = min(row[j], previous2[j - 2] + 1)
        if min(row) >= limit:
            return limit
        previous2, previous = previous, row
    return min(previous[-1], limit)
