"""A packet for display: its protocol name, a one-line summary like
Wireshark's Info column, and a tree of decoded fields whose byte ranges a
view can highlight.

Display only: nothing here decides a verdict. Every function takes any
bytes and never raises; what cannot be decoded becomes a "Malformed" node
that says what and where.
"""

from __future__ import annotations

import ipaddress
from struct import error as struct_error
from typing import NamedTuple

import dpkt

from divertgui.engine.header_fields import (
    FILTER_READS, ICMP, IPPROTO_AH, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_ICMPV6,
    IPPROTO_MH, IPPROTO_ROUTING, IPPROTO_TCP, IPPROTO_UDP, IPV4, IPV4_HEADER_LEN, IPV6, IPV6_FRAGMENT,
    IPV6_HEADER_LEN, TCP, TCP_HEADER_MIN, field_value, ip_version, read_value,
)
from divertgui.engine.headers import parse_headers
from divertgui.engine.packet import (
    TCP_OPTION_NAMES, ExtensionHeader, FragmentHeader, IPv4Header, IPv6Header,
    OptionsHeader, Packet, RoutingHeader, TCPHeader, field_label, format_ipv6, ipv6_options, tcp_options,
)


class Node(NamedTuple):
    label: str
    value: str
    offset: int         # first byte in the packet
    length: int         # bytes covered
    children: list


IP_PROTOCOL_NAMES = {
    IPPROTO_HOPOPTS: "IPv6 Hop-by-Hop", IPPROTO_ICMP: "ICMP", 2: "IGMP", 4: "IPIP", IPPROTO_TCP: "TCP",
    IPPROTO_UDP: "UDP", 41: "IPv6", IPPROTO_ROUTING: "IPv6 Routing", IPPROTO_FRAGMENT: "IPv6 Fragment", 47: "GRE",
    50: "ESP", IPPROTO_AH: "AH", IPPROTO_ICMPV6: "ICMPv6", 59: "IPv6 No Next Header",
    IPPROTO_DSTOPTS: "IPv6 Destination Options", 89: "OSPF", 103: "PIM", 112: "VRRP", 132: "SCTP",
    IPPROTO_MH: "Mobility", 136: "UDP-Lite",
}

_HTTP_METHODS = (b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ", b"OPTIONS ", b"PATCH ",
                 b"CONNECT ", b"TRACE ")
_TLS_CONTENT = {20: "Change Cipher Spec", 21: "Alert", 22: "Handshake", 23: "Application Data"}
_TLS_HANDSHAKE = {0: "Hello Request", 1: "Client Hello", 2: "Server Hello", 4: "New Session Ticket",
                  8: "Encrypted Extensions", 11: "Certificate", 12: "Server Key Exchange",
                  13: "Certificate Request", 14: "Server Hello Done", 15: "Certificate Verify",
                  16: "Client Key Exchange", 20: "Finished"}
_DNS_TYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
              33: "SRV", 41: "OPT", 43: "DS", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 64: "SVCB",
              65: "HTTPS", 255: "ANY"}
_DNS_RCODES = {1: "Format error", 2: "Server failure", 3: "No such name", 4: "Not implemented",
               5: "Refused"}


# --- application protocol recognition -------------------------------------------

def _is_http(data: bytes) -> bool:
    return data.startswith(_HTTP_METHODS) or data.startswith(b"HTTP/1.")


def _is_tls(data: bytes) -> bool:
    return len(data) >= 5 and data[0] in _TLS_CONTENT and data[1] == 3 and data[2] <= 4


def _is_quic(data: bytes, src_port: int, dst_port: int) -> bool:
    # Every QUIC packet has the fixed bit set (RFC 9000, section 17).
    return 443 in (src_port, dst_port) and len(data) >= 1 and data[0] & 0x40 != 0


def _application(protocol: int, src_port: int, dst_port: int, data: bytes) -> str | None:
    ports = (src_port, dst_port)
    if protocol == IPPROTO_TCP:
        if not data:
            return None
        if _is_http(data):
            return "HTTP"
        if _is_tls(data):
            return "TLS"
        if 53 in ports:
            return "DNS"
        return None
    if 53 in ports:
        return "DNS"
    if 5353 in ports:
        return "MDNS"
    if _is_quic(data, src_port, dst_port):
        return "QUIC"
    if 67 in ports or 68 in ports:
        return "DHCP"
    if 123 in ports:
        return "NTP"
    if 1900 in ports:
        return "SSDP"
    return None


def _ports(raw, at: int) -> tuple[int, int]:
    # TCP and UDP put their ports alike.
    return field_value(raw, at, TCP["src_port"]), field_value(raw, at, TCP["dst_port"])


def protocol_name(raw: bytes) -> str:
    """The highest protocol recognised: "TCP", "UDP", "DNS", "HTTP", "TLS", "QUIC", "ICMP", "ICMPv6", ..."""
    try:
        return _protocol_name(raw)
    except Exception:   # display must go on; the tree shows what failed
        return "Malformed"


def _protocol_name(raw: bytes) -> str:
    layout = parse_headers(raw)
    if layout is None:
        if ip_version(raw) in (4, 6):
            return f"IPv{ip_version(raw)}"
        return "Unknown"
    ip_name = f"IPv{layout.version}"
    if layout.frag_offset:
        return ip_name
    if layout.transport in (IPPROTO_TCP, IPPROTO_UDP):
        src_port, dst_port = _ports(raw, layout.transport_offset)
        data = bytes(raw[layout.payload_offset:layout.payload_offset + layout.payload_len])
        return _application(layout.transport, src_port, dst_port, data) or \
            ("TCP" if layout.transport == IPPROTO_TCP else "UDP")
    if layout.transport == IPPROTO_ICMP:
        return "ICMP"
    if layout.transport == IPPROTO_ICMPV6:
        return "ICMPv6"
    return IP_PROTOCOL_NAMES.get(layout.protocol, ip_name)


# --- one-line summary --------------------------------------------------------------

_TCP_FLAG_NAMES = (("FIN", 0x01), ("SYN", 0x02), ("RST", 0x04), ("PSH", 0x08), ("ACK", 0x10),
                   ("URG", 0x20), ("ECE", 0x40), ("CWR", 0x80))
_ICMP_TYPES = {0: "Echo (ping) reply", 3: "Destination unreachable", 4: "Source quench",
               5: "Redirect", 8: "Echo (ping) request", 9: "Router advertisement",
               10: "Router solicitation", 11: "Time-to-live exceeded", 12: "Parameter problem",
               13: "Timestamp request", 14: "Timestamp reply"}
_ICMP_UNREACHABLE = {0: "Network unreachable", 1: "Host unreachable", 2: "Protocol unreachable",
                     3: "Port unreachable", 4: "Fragmentation needed", 5: "Source route failed",
                     9: "Network administratively prohibited", 10: "Host administratively prohibited",
                     13: "Communication administratively filtered"}
_ICMPV6_TYPES = {1: "Destination Unreachable", 2: "Packet Too Big", 3: "Time Exceeded",
                 4: "Parameter Problem", 128: "Echo (ping) request", 129: "Echo (ping) reply",
                 130: "Multicast Listener Query", 131: "Multicast Listener Report",
                 133: "Router Solicitation", 134: "Router Advertisement",
                 135: "Neighbor Solicitation", 136: "Neighbor Advertisement", 137: "Redirect",
                 143: "Multicast Listener Report Message v2"}


def tcp_flags_text(flags: int) -> str:
    return ", ".join(name for name, bit in _TCP_FLAG_NAMES if flags & bit)


def summary(raw: bytes, address=None) -> str:
    """One line like Wireshark's Info column, decoded from the bytes alone.

    `address` is taken so that a row's (raw, address) pair passes as it is.
    """
    try:
        return _summary(raw)
    except Exception as exc:   # display must go on
        return f"Malformed packet ({len(raw)} bytes): {type(exc).__name__}: {exc}"


def _summary(raw: bytes) -> str:
    layout = parse_headers(raw)
    if layout is None:
        return _malformed_ip_reason(raw)
    if layout.frag_offset:
        proto = IP_PROTOCOL_NAMES.get(layout.protocol, str(layout.protocol))
        ident = _fragment_id(raw, layout)
        return (f"Fragmented IP protocol (proto={proto} {layout.protocol}, "
                f"off={layout.frag_offset * 8}, ID={ident:x})")
    payload = bytes(raw[layout.payload_offset:layout.payload_offset + layout.payload_len])
    if layout.transport == IPPROTO_TCP:
        return _tcp_summary(raw, layout.transport_offset, layout.transport_len, payload)
    if layout.transport == IPPROTO_UDP:
        return _udp_summary(raw, layout.transport_offset, payload)
    if layout.transport == IPPROTO_ICMP:
        return _icmp_summary(raw, layout.transport_offset, _ICMP_TYPES)
    if layout.transport == IPPROTO_ICMPV6:
        return _icmp_summary(raw, layout.transport_offset, _ICMPV6_TYPES)
    name = IP_PROTOCOL_NAMES.get(layout.protocol, f"protocol {layout.protocol}")
    if layout.protocol in (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_ICMPV6):
        return f"Malformed {name} header: {layout.payload_len} bytes after the IP header"
    return f"{name}, {layout.payload_len} bytes"


def _fragment_id(raw, layout) -> int:
    if layout.version == 4:
        return field_value(raw, 0, IPV4["id"])
    for kind, offset, _ in layout.ext_headers:
        if kind == IPPROTO_FRAGMENT:
            return field_value(raw, offset, IPV6_FRAGMENT["id"])
    return 0


def _malformed_ip_reason(raw) -> str:
    size = len(raw)
    if not size:
        return "Malformed packet: empty"
    version = ip_version(raw)
    if version == 4:
        if size < IPV4_HEADER_LEN:
            return f"Malformed IPv4 packet: {size} bytes, shorter than the {IPV4_HEADER_LEN}-byte header"
        header_len = field_value(raw, 0, IPV4["hdr_len"]) * 4
        if header_len < IPV4_HEADER_LEN:
            return f"Malformed IPv4 packet: header length {header_len} < {IPV4_HEADER_LEN}"
        if header_len > size:
            return f"Malformed IPv4 packet: header length {header_len} > {size} bytes present"
        return f"Malformed IPv4 packet: total length {field_value(raw, 0, IPV4['length'])} < header length {header_len}"
    if version == 6:
        return f"Malformed IPv6 packet: {size} bytes, shorter than the {IPV6_HEADER_LEN}-byte header"
    return f"Not an IP packet: version {version} ({size} bytes)"


def _tcp_summary(raw, at: int, header_len: int, payload: bytes) -> str:
    src_port, dst_port = _ports(raw, at)
    app = _application(IPPROTO_TCP, src_port, dst_port, payload)
    if app == "HTTP":
        return _http_summary(payload)
    if app == "TLS":
        return _tls_summary(payload)
    if app == "DNS" and len(payload) > 2:
        text = _dns_summary(payload[2:])
        if text:
            return text
    flags, seq, ack, window = (field_value(raw, at, TCP[name]) for name in ("flags", "seq_num", "ack_num", "window"))
    text = f"{src_port} → {dst_port} [{tcp_flags_text(flags)}] Seq={seq}"
    if flags & 1 << TCP["ack"].shift:
        text += f" Ack={ack}"
    text += f" Win={window} Len={len(payload)}"
    options = tcp_options(raw[at + TCP_HEADER_MIN:at + header_len])
    for option in options:
        if option.kind == 2 and len(option.data) == 2:
            text += f" MSS={int.from_bytes(option.data, 'big')}"
        elif option.kind == 3 and len(option.data) == 1:
            text += f" WS={1 << min(option.data[0], 14)}"
        elif option.kind == 4:
            text += " SACK_PERM"
        elif option.kind == 8 and len(option.data) == 8:
            text += (f" TSval={int.from_bytes(option.data[:4], 'big')}"
                     f" TSecr={int.from_bytes(option.data[4:], 'big')}")
    if header_len < field_value(raw, at, TCP["hdr_len"]) * 4:
        text += " [header truncated]"
    return text


def _udp_summary(raw, at: int, payload: bytes) -> str:
    src_port, dst_port = _ports(raw, at)
    app = _application(IPPROTO_UDP, src_port, dst_port, payload)
    if app in ("DNS", "MDNS"):
        text = _dns_summary(payload)
        if text:
            return text
    if app == "QUIC":
        return _quic_summary(payload)
    return f"{src_port} → {dst_port} Len={len(payload)}"


def _icmp_summary(raw, at: int, names: dict) -> str:
    kind, code = field_value(raw, at, ICMP["type"]), field_value(raw, at, ICMP["code"])
    name = names.get(kind, f"Type {kind}")
    if kind in (0, 8, 128, 129):
        ident = raw[at + 4] << 8 | raw[at + 5]
        seq = raw[at + 6] << 8 | raw[at + 7]
        return f"{name} id=0x{ident:04x}, seq={seq}"
    if kind == 3 and names is _ICMP_TYPES:
        return f"{name} ({_ICMP_UNREACHABLE.get(code, f'code {code}')})"
    if kind in (135, 136) and names is _ICMPV6_TYPES and len(raw) >= at + 24:
        target = format_ipv6(bytes(raw[at + 8:at + 24]))
        return f"{name} for {target}" if kind == 135 else f"{name} {target}"
    return f"{name} (code {code})"


def _http_summary(payload: bytes) -> str:
    line = payload.split(b"\r\n", 1)[0].split(b"\n", 1)[0]
    return line[:200].decode("latin-1")


def _tls_summary(payload: bytes) -> str:
    parts, at = [], 0
    while at + 5 <= len(payload) and len(parts) < 4:
        content = payload[at]
        length = payload[at + 3] << 8 | payload[at + 4]
        if content == 22 and at + 5 < len(payload):
            parts.append(_TLS_HANDSHAKE.get(payload[at + 5], "Handshake"))
        else:
            parts.append(_TLS_CONTENT.get(content, f"Record type {content}"))
        at += 5 + length
    return ", ".join(parts) or "TLS"


def _quic_summary(payload: bytes) -> str:
    first = payload[0]
    if first & 0x80:
        kind = ("Initial", "0-RTT", "Handshake", "Retry")[(first >> 4) & 3]
        version = int.from_bytes(payload[1:5], "big") if len(payload) >= 5 else 0
        return f"{kind}, version 0x{version:08x}" if version else "Version Negotiation"
    return "Protected Payload (short header)"


def _dns_summary(payload: bytes) -> str | None:
    try:
        message = dpkt.dns.DNS(payload)
    except (dpkt.UnpackError, IndexError, ValueError, struct_error):
        return None
    kind = "Standard query response" if message.qr == dpkt.dns.DNS_R else "Standard query"
    parts = [f"{kind} 0x{message.id:04x}"]
    if message.qr == dpkt.dns.DNS_R and message.rcode:
        parts.append(_DNS_RCODES.get(message.rcode, f"rcode {message.rcode}"))
    for question in message.qd[:3]:
        parts.append(f"{_DNS_TYPES.get(question.type, question.type)} {question.name}")
    for answer in message.an[:4]:
        parts.append(f"{_DNS_TYPES.get(answer.type, answer.type)} {_dns_rdata(answer)}")
    return " ".join(parts)


def _dns_rdata(record) -> str:
    if record.type == dpkt.dns.DNS_A and len(record.rdata) == 4:
        return str(ipaddress.IPv4Address(record.rdata))
    if record.type == dpkt.dns.DNS_AAAA and len(record.rdata) == 16:
        return format_ipv6(record.rdata)
    for name in ("cname", "nsname", "ptrname", "mxname"):
        value = getattr(record, name, None)
        if value:
            return value
    return f"{len(record.rdata)} bytes"


# --- decoded tree -------------------------------------------------------------------

_HEX_FIELDS = {"checksum", "tos", "flags", "body", "flow_label", "traffic_class", "id", "spi"}
_IPV4_OPTION_NAMES = {0: "End of Option List", 1: "No-Operation", 7: "Record Route",
                      68: "Timestamp", 130: "Security", 131: "Loose Source Route",
                      137: "Strict Source Route", 148: "Router Alert"}
_IPV6_OPTION_NAMES = {0: "Pad1", 1: "PadN", 5: "Router Alert", 194: "Jumbo Payload"}


def decode_tree(raw: bytes) -> list[Node]:
    """Nested nodes for every header field, with the bytes each one covers."""
    raw = bytes(raw)
    nodes: list[Node] = []
    layout = parse_headers(raw)
    if layout is None:
        return [Node("Malformed", _malformed_ip_reason(raw), 0, len(raw), [])]
    packet = Packet(raw)
    _guarded(nodes, raw, 0, _ip_node, packet, layout)
    transport = layout.transport
    if transport:
        at = layout.transport_offset
        decoder = {IPPROTO_TCP: _tcp_node, IPPROTO_UDP: _udp_node,
                   IPPROTO_ICMP: _icmp_node, IPPROTO_ICMPV6: _icmp_node}[transport]
        _guarded(nodes, raw, at, decoder, packet, layout)
    elif layout.protocol in (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_ICMPV6) \
            and not layout.frag_offset and layout.payload_len:
        name = IP_PROTOCOL_NAMES[layout.protocol]
        nodes.append(Node("Malformed", f"{name} header does not fit in {layout.payload_len} bytes",
                          layout.payload_offset, layout.payload_len, []))
        return nodes
    if layout.payload_len:
        _guarded(nodes, raw, layout.payload_offset, _payload_node, packet, layout)
    if len(raw) > layout.ip_total_len:
        nodes.append(Node("Trailing bytes", f"{len(raw) - layout.ip_total_len} bytes after the IP length",
                          layout.ip_total_len, len(raw) - layout.ip_total_len, []))
    elif _length_field(raw, layout) > len(raw):
        nodes.append(Node("Malformed", f"IP length {_length_field(raw, layout)} is more than the "
                          f"{len(raw)} bytes present", 0, len(raw), []))
    return nodes


def _length_field(raw, layout) -> int:
    if layout.version == 4:
        return field_value(raw, 0, IPV4["length"])
    return field_value(raw, 0, IPV6["length"]) + IPV6_HEADER_LEN


def _guarded(nodes, raw, offset, decoder, packet, layout) -> None:
    try:
        nodes.extend(decoder(packet, layout))
    except Exception as exc:   # a decoder's bug must not hide the layers that did decode
        nodes.append(Node("Malformed", f"{decoder.__name__[1:]}: {type(exc).__name__}: {exc}",
                          offset, max(0, len(raw) - offset), []))


# Fields shown under another field, as bits of it.
_SUBFIELDS = {
    "tos": ("dscp", "ecn"),
    "flags": ("reserved_flag", "df", "mf", "ns", "cwr", "ece", "urg", "ack", "psh", "rst", "syn", "fin"),
}


def _field_nodes(view) -> list[Node]:
    # Labels come from the descriptors so that the tree and the packet editor's form name a field alike.
    nodes, by_name = [], {}
    for name, attr in view.field_descriptors().items():
        if isinstance(view, FragmentHeader) and name == "hdr_ext_len":
            continue
        value = getattr(view, name)
        text = _format_value(name, value, attr)
        if name == "flags" and isinstance(view, TCPHeader):
            text += f" ({tcp_flags_text(value)})"
        by_name[name] = Node(field_label(attr, name), text, view.offset + attr.offset, attr.size, [])
    nested = {child for parent in _SUBFIELDS if parent in by_name for child in _SUBFIELDS[parent]}
    for name, node in by_name.items():
        if name in nested:
            continue
        for child in _SUBFIELDS.get(name, ()):
            if child in by_name:
                node.children.append(by_name[child])
        nodes.append(node)
    return nodes


def _format_value(name: str, value, attr) -> str:
    if isinstance(value, bool):
        return "Set" if value else "Not set"
    if isinstance(value, str):
        return value
    if name in _HEX_FIELDS:
        return f"0x{value:0{(attr.mask.bit_length() + 3) // 4}x}"
    if name in ("protocol", "next_hdr"):
        return f"{IP_PROTOCOL_NAMES.get(value, 'unknown')} ({value})"
    if name == "hdr_len":
        return f"{value * 4} bytes ({value})"
    if name == "frag_offset":
        return f"{value * 8} ({value})"
    return str(value)


def _ip_node(packet: Packet, layout) -> list[Node]:
    if layout.version == 4:
        ip = IPv4Header(packet, 0)
        children = _field_nodes(ip)
        options = ip.options
        if options:
            children.append(Node("Options", f"{len(options)} bytes", 20, len(options),
                                 _ipv4_option_nodes(options, 20)))
        title = f"Internet Protocol Version 4, Src: {ip.src_addr}, Dst: {ip.dst_addr}"
        return [Node(title, "", 0, layout.ip_header_len, children)]
    ip6 = IPv6Header(packet, 0)
    children = _field_nodes(ip6)
    for node in children:
        if node.label == IPV6["flow_label"].label:
            node.children.append(_filter_flow_label_node(packet.raw))
    nodes = [Node(f"Internet Protocol Version 6, Src: {ip6.src_addr}, Dst: {ip6.dst_addr}", "",
                  0, 40, children)]
    for header in ip6.extension_headers:
        nodes.append(_extension_node(header))
    return nodes


def _filter_flow_label_node(raw: bytes) -> Node:
    """What a filter's ipv6.FlowLabel compares: WinDivert's value, not the 20-bit label."""
    read = FILTER_READS["ipv6.FlowLabel"]
    value = read_value(raw, 0, read)
    first = min(field.offset for field, _ in read.pieces)
    last = max(field.offset + field.size for field, _ in read.pieces)
    return Node("ipv6.FlowLabel in filters (WinDivert's byte order)", f"0x{value:08x} ({value})",
                first, last - first, [])


def _ipv4_option_nodes(options: bytes, base: int) -> list[Node]:
    nodes, at = [], 0
    while at < len(options):
        kind = options[at]
        name = _IPV4_OPTION_NAMES.get(kind, f"Option {kind}")
        if kind in (0, 1):
            nodes.append(Node(name, "", base + at, 1, []))
            at += 1
            if kind == 0:
                break
            continue
        size = options[at + 1] if at + 1 < len(options) else 0
        if size < 2 or at + size > len(options):
            nodes.append(Node("Malformed", f"{name}: length {size} does not fit",
                              base + at, len(options) - at, []))
            break
        nodes.append(Node(name, options[at + 2:at + size].hex(), base + at, size, []))
        at += size
    return nodes


def _extension_node(header: ExtensionHeader) -> Node:
    name = IP_PROTOCOL_NAMES.get(header.header_type, f"Extension header {header.header_type}")
    children = _field_nodes(header)
    if isinstance(header, OptionsHeader):
        for option in ipv6_options(header.data):
            at = header.offset + 2 + option.offset
            size = min(1 if option.type == 0 else 2 + len(option.data), header.header_len - 2 - option.offset)
            children.append(Node(_IPV6_OPTION_NAMES.get(option.type, f"Option {option.type}"),
                                 option.data.hex(), at, size, []))
    elif isinstance(header, RoutingHeader):
        data = header.type_data
        if data:
            children.append(Node("Type-specific data", data.hex(), header.offset + 4, len(data), []))
    elif not isinstance(header, FragmentHeader):
        data = header.data
        children.append(Node("Data", data.hex(), header.offset + 2, len(data), []))
    return Node(name, "", header.offset, header.header_len, children)


def _tcp_node(packet: Packet, layout) -> list[Node]:
    tcp = packet.tcp
    children = _field_nodes(tcp)
    options = tcp.options
    if options:
        option_nodes = []
        for option in tcp_options(options):
            at = tcp.offset + 20 + option.offset
            size = 1 if option.kind in (0, 1) else 2 + len(option.data)
            size = min(size, len(options) - option.offset)
            option_nodes.append(Node(TCP_OPTION_NAMES.get(option.kind, f"Option {option.kind}"),
                                     _tcp_option_value(option), at, size, []))
        children.append(Node("Options", f"{len(options)} bytes", tcp.offset + 20, len(options), option_nodes))
    title = (f"Transmission Control Protocol, Src Port: {tcp.src_port}, Dst Port: {tcp.dst_port}, "
             f"Seq: {tcp.seq_num}, Len: {layout.payload_len}")
    nodes = [Node(title, f"[{tcp_flags_text(tcp.flags)}]", tcp.offset, tcp.header_len, children)]
    if tcp.header_len < tcp.hdr_len * 4:
        nodes.append(Node("Malformed", f"TCP header length {tcp.hdr_len * 4} is more than the "
                          f"{tcp.header_len} bytes present", tcp.offset, tcp.header_len, []))
    return nodes


def _tcp_option_value(option) -> str:
    data = option.data
    if option.kind == 2 and len(data) == 2:
        return str(int.from_bytes(data, "big"))
    if option.kind == 3 and len(data) == 1:
        return f"shift {data[0]} (multiply by {1 << min(data[0], 14)})"
    if option.kind == 5:
        return " ".join(f"{int.from_bytes(data[i:i + 4], 'big')}-{int.from_bytes(data[i + 4:i + 8], 'big')}"
                        for i in range(0, len(data) - 7, 8))
    if option.kind == 8 and len(data) == 8:
        return f"TSval {int.from_bytes(data[:4], 'big')}, TSecr {int.from_bytes(data[4:], 'big')}"
    return data.hex()


def _udp_node(packet: Packet, layout) -> list[Node]:
    udp = packet.udp
    title = f"User Datagram Protocol, Src Port: {udp.src_port}, Dst Port: {udp.dst_port}"
    return [Node(title, "", udp.offset, 8, _field_nodes(udp))]


def _icmp_node(packet: Packet, layout) -> list[Node]:
    view = packet.icmp if layout.transport == IPPROTO_ICMP else packet.icmpv6
    names = _ICMP_TYPES if layout.transport == IPPROTO_ICMP else _ICMPV6_TYPES
    title = ("Internet Control Message Protocol" if layout.transport == IPPROTO_ICMP
             else "Internet Control Message Protocol v6")
    return [Node(title, names.get(view.type, f"Type {view.type}"), view.offset, 8, _field_nodes(view))]


def _payload_node(packet: Packet, layout) -> list[Node]:
    start, size = layout.payload_offset, layout.payload_len
    data = packet.raw[start:start + size]
    app = None
    if layout.transport in (IPPROTO_TCP, IPPROTO_UDP):
        src_port, dst_port = _ports(packet.raw, layout.transport_offset)
        app = _application(layout.transport, src_port, dst_port, data)
    if app == "HTTP":
        return [_http_node(data, start)]
    if app in ("DNS", "MDNS"):
        skip = 2 if layout.transport == IPPROTO_TCP else 0
        node = _dns_node(data[skip:], start + skip)
        if node is not None:
            return [node]
    if app == "TLS":
        return [_tls_node(data, start)]
    label = "Data" if layout.transport or layout.frag_offset == 0 else "Fragment data"
    return [Node(label, f"{size} bytes", start, size, [])]


def _http_node(data: bytes, base: int) -> Node:
    children, at = [], 0
    end_of_headers = data.find(b"\r\n\r\n")
    head_end = end_of_headers if end_of_headers >= 0 else len(data)
    while at < head_end:
        line_end = data.find(b"\r\n", at, head_end)
        if line_end < 0:
            line_end = head_end
        line = data[at:line_end]
        if at == 0:
            label, value = "Request" if not line.startswith(b"HTTP/") else "Response", line
        else:
            name, _, value = line.partition(b":")
            label, value = name.decode("latin-1").strip() or "(empty name)", value.strip()
        children.append(Node(label, value.decode("latin-1")[:500], base + at, line_end - at, []))
        at = line_end + 2
    if end_of_headers >= 0 and end_of_headers + 4 < len(data):
        body = len(data) - end_of_headers - 4
        children.append(Node("Body", f"{body} bytes", base + end_of_headers + 4, body, []))
    elif end_of_headers < 0:
        children.append(Node("Incomplete", "headers continue in a later segment", base, len(data), []))
    first = data.split(b"\r\n", 1)[0].decode("latin-1")[:200]
    return Node("Hypertext Transfer Protocol", first, base, len(data), children)


def _dns_node(data: bytes, base: int) -> Node | None:
    try:
        message = dpkt.dns.DNS(data)
    except (dpkt.UnpackError, IndexError, ValueError, struct_error):
        if len(data) >= 12:
            return Node("Domain Name System", "malformed", base, len(data),
                        [Node("Malformed", "records do not decode", base + 12, len(data) - 12, [])])
        return None
    kind = "response" if message.qr == dpkt.dns.DNS_R else "query"
    children = [
        Node("Transaction ID", f"0x{message.id:04x}", base, 2, []),
        Node("Flags", f"0x{int.from_bytes(data[2:4], 'big'):04x} ({kind})", base + 2, 2, []),
        Node("Questions", str(len(message.qd)), base + 4, 2, []),
        Node("Answer RRs", str(len(message.an)), base + 6, 2, []),
        Node("Authority RRs", str(len(message.ns)), base + 8, 2, []),
        Node("Additional RRs", str(len(message.ar)), base + 10, 2, []),
    ]
    # dpkt does not keep record offsets: records point at the whole record section.
    records = base + 12, max(0, len(data) - 12)
    if message.qd:
        children.append(Node("Queries", "", *records, [
            Node(question.name or "<Root>", _DNS_TYPES.get(question.type, str(question.type)), *records, [])
            for question in message.qd]))
    if message.an:
        children.append(Node("Answers", "", *records, [
            Node(answer.name or "<Root>",
                 f"{_DNS_TYPES.get(answer.type, str(answer.type))} {_dns_rdata(answer)} ttl={answer.ttl}",
                 *records, [])
            for answer in message.an]))
    return Node("Domain Name System", kind, base, len(data), children)


def _tls_node(data: bytes, base: int) -> Node:
    records, at = [], 0
    while at + 5 <= len(data):
        content = data[at]
        length = data[at + 3] << 8 | data[at + 4]
        name = _TLS_CONTENT.get(content, f"Record type {content}")
        size = min(5 + length, len(data) - at)
        children = [Node("Content Type", f"{name} ({content})", base + at, 1, []),
                    Node("Version", f"0x{data[at + 1]:02x}{data[at + 2]:02x}", base + at + 1, 2, []),
                    Node("Length", str(length), base + at + 3, 2, [])]
        if content == 22 and at + 5 < len(data):
            kind = data[at + 5]
            children.append(Node("Handshake Type", f"{_TLS_HANDSHAKE.get(kind, 'unknown')} ({kind})",
                                 base + at + 5, 1, []))
        records.append(Node("TLS Record", name, base + at, size, children))
        at += 5 + length
    if at < len(data):
        records.append(Node("Continuation", f"{len(data) - at} bytes", base + at, len(data) - at, []))
    return Node("Transport Layer Security", "", base, len(data), records)
