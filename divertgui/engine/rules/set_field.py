"""Set field: write header fields by name (TTL, DSCP, TCP window, ports, any writable field)."""

from __future__ import annotations

import ipaddress

from divertgui.engine import header_fields
from divertgui.engine import packet as packet_views
from divertgui.engine.rules.base import Param, Rule, RuleError

# The header views a field name may start with, and their classes.
VIEWS = {
    "ip": packet_views.IPv4Header,
    "ipv6": packet_views.IPv6Header,
    "icmp": packet_views.ICMPHeader,
    "icmpv6": packet_views.ICMPv6Header,
    "tcp": packet_views.TCPHeader,
    "udp": packet_views.UDPHeader,
}

# Names that mean the same thing in whichever header the packet has.
ALIASES = {
    "ttl": ("ip.ttl", "ipv6.hop_limit"),
    "hop_limit": ("ip.ttl", "ipv6.hop_limit"),
    "dscp": ("ip.dscp", "ipv6.dscp"),
    "src_port": ("tcp.src_port", "udp.src_port"),
    "dst_port": ("tcp.dst_port", "udp.dst_port"),
}

_DSCP, _ECN = header_fields.TRAFFIC_CLASS_DSCP, header_fields.TRAFFIC_CLASS_ECN


def _descriptor(view_class, attribute: str):
    for klass in view_class.__mro__:
        found = vars(klass).get(attribute)
        if isinstance(found, (packet_views.Field, packet_views.AddressField)):
            return found
    return None


def resolve(name: str, value, where: str) -> list[tuple[str, str, object]]:
    """(view, attribute, value) targets for a field name; RuleError when the name or value is not writable."""
    targets = ALIASES.get(name, (name,))
    resolved = []
    for target in targets:
        view, _, attribute = target.partition(".")
        if view not in VIEWS or not attribute:
            raise RuleError(f"unknown field {name!r}: use view.field with a view among "
                            f"{', '.join(VIEWS)}, or one of {', '.join(ALIASES)}", where)
        if (view, attribute) == ("ipv6", "dscp"):
            descriptor = _descriptor(packet_views.IPv4Header, "dscp")
        else:
            descriptor = _descriptor(VIEWS[view], attribute)
        if descriptor is None:
            raise RuleError(f"{view} has no writable field {attribute!r}", where)
        if isinstance(descriptor, packet_views.Field):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= descriptor.mask:
                raise RuleError(f"{target} takes a whole number within 0..{descriptor.mask}, not {value!r}", where)
        elif not isinstance(value, str):
            raise RuleError(f"{target} takes an address as text, not {value!r}", where)
        resolved.append((view, attribute, value))
    return resolved


def _read(view, attribute: str):
    if attribute == "dscp" and isinstance(view, packet_views.IPv6Header):
        return view.traffic_class >> _DSCP.shift & _DSCP.mask
    return getattr(view, attribute)


def _write(view, attribute: str, value) -> None:
    if attribute == "dscp" and isinstance(view, packet_views.IPv6Header):
        view.traffic_class = (value << _DSCP.shift) | (view.traffic_class >> _ECN.shift & _ECN.mask) << _ECN.shift
    else:
        setattr(view, attribute, value)


class SetField(Rule):
    """`fields` maps field names ("ip.ttl", "tcp.window", "udp.dst_port", "ttl", "dscp", ...)
    to the values to write; a packet without that header is left alone. Checksums are
    fixed afterwards unless fix_checksums is off (or a checksum field is itself set)."""

    kind = "set_field"
    rewrites = True
    params = {
        "fields": Param({}),
        "fix_checksums": Param(True),
    }

    def setup(self) -> None:
        self._targets = []
        for name, value in self.fields.items():
            self._targets.extend(resolve(name, value, f"{self.kind}.fields.{name}"))
        self._sets_checksum = any(attribute == "checksum" for _, attribute, _ in self._targets)

    def process(self, packet, now_ns: int, out: list) -> None:
        out.append(packet)
        changed = False
        for view_name, attribute, value in self._targets:
            view = getattr(packet, view_name)
            if view is None:
                continue
            current = _read(view, attribute)
            if current == value or (isinstance(current, str) and current == _normal_address(value)):
                continue
            _write(view, attribute, value)
            changed = True
        if changed:
            if self.fix_checksums and not self._sets_checksum:
                packet.recalculate_checksums()
            self.counters["modified"] += 1


def _normal_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text
