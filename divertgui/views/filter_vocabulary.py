"""Words of the filter language, for highlighting and completion only.

Validation always goes through the engine's compiler; these lists only help
the user type.
"""

from __future__ import annotations

NETWORK_FIELDS = (
    "zero", "timestamp", "event", "outbound", "inbound", "ifIdx", "subIfIdx",
    "loopback", "impostor", "fragment", "random8", "random16", "random32",
    "packet[0]", "packet16[0]", "packet32[0]", "length",
    "ip", "ipv6", "icmp", "icmpv6", "tcp", "udp", "protocol",
    "localAddr", "localPort", "remoteAddr", "remotePort",
    "ip.HdrLength", "ip.TOS", "ip.Length", "ip.Id", "ip.DF", "ip.MF", "ip.FragOff",
    "ip.TTL", "ip.Protocol", "ip.Checksum", "ip.SrcAddr", "ip.DstAddr",
    "ipv6.TrafficClass", "ipv6.FlowLabel", "ipv6.Length", "ipv6.NextHdr",
    "ipv6.HopLimit", "ipv6.SrcAddr", "ipv6.DstAddr",
    "icmp.Type", "icmp.Code", "icmp.Checksum", "icmp.Body",
    "icmpv6.Type", "icmpv6.Code", "icmpv6.Checksum", "icmpv6.Body",
    "tcp.SrcPort", "tcp.DstPort", "tcp.SeqNum", "tcp.AckNum", "tcp.HdrLength",
    "tcp.Urg", "tcp.Ack", "tcp.Psh", "tcp.Rst", "tcp.Syn", "tcp.Fin",
    "tcp.Window", "tcp.Checksum", "tcp.UrgPtr",
    "tcp.PayloadLength", "tcp.Payload[0]", "tcp.Payload16[0]", "tcp.Payload32[0]",
    "udp.SrcPort", "udp.DstPort", "udp.Length", "udp.Checksum",
    "udp.PayloadLength", "udp.Payload[0]", "udp.Payload16[0]", "udp.Payload32[0]",
)

MACROS = (
    "TRUE", "FALSE", "TCP", "UDP", "ICMP", "ICMPV6", "PACKET",
    "ESTABLISHED", "DELETED", "BIND", "CONNECT", "ACCEPT", "LISTEN", "CLOSE", "OPEN",
    "NETWORK", "NETWORK_FORWARD", "FLOW", "SOCKET", "REFLECT",
)

KEYWORDS = ("true", "false", "and", "or", "not")

# Clumsy's presets, with its X and P placeholders filled by an example the
# user edits in place.
PRESETS = (
    ("localhost", "outbound and loopback"),
    ("localhost TCP", "tcp and outbound and loopback"),
    ("localhost UDP", "udp and outbound and loopback"),
    ("all outbound", "outbound"),
    ("all inbound", "inbound"),
    ("to/from address", "ip.DstAddr == 10.0.0.1 or ip.SrcAddr == 10.0.0.1"),
    ("TCP to/from address", "tcp and (ip.DstAddr == 10.0.0.1 or ip.SrcAddr == 10.0.0.1)"),
    ("UDP to/from address", "udp and (ip.DstAddr == 10.0.0.1 or ip.SrcAddr == 10.0.0.1)"),
    ("port", "tcp.DstPort == 80 or tcp.SrcPort == 80 or udp.DstPort == 80 or udp.SrcPort == 80"),
    ("IPv6", "ipv6"),
    ("DNS", "udp.DstPort == 53 or udp.SrcPort == 53"),
    ("HTTP(S)", "tcp.DstPort == 80 or tcp.DstPort == 443 or tcp.SrcPort == 80 or tcp.SrcPort == 443"),
    ("ping", "icmp.Type == 8 or icmp.Type == 0 or icmpv6.Type == 128 or icmpv6.Type == 129"),
    ("TCP handshakes", "tcp.Syn"),
)


def completion_words() -> list[str]:
    return sorted(set(NETWORK_FIELDS) | set(MACROS) | set(KEYWORDS), key=str.lower)
