"""The demo network's hosts, their addresses and answer delays, and the names they ask for."""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

LOCAL_DELAY_NS = 40_000


def _ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


class Host(NamedTuple):
    name: str
    v4: bytes
    v6: bytes
    local: bool
    delay_ns: int      # from receiving a packet to its answer crossing the divert point


HOSTS = (
    Host("this", _ip("10.0.0.2"), _ip("fd00::2"), True, LOCAL_DELAY_NS),
    Host("loopback", _ip("127.0.0.1"), _ip("::1"), True, LOCAL_DELAY_NS),
    Host("gateway", _ip("10.0.0.1"), _ip("fd00::1"), False, 600_000),
    Host("resolver", _ip("10.0.0.53"), _ip("fd00::53"), False, 1_500_000),
    Host("web", _ip("198.51.100.10"), _ip("2001:db8:10::10"), False, 18_000_000),
    Host("cdn", _ip("203.0.113.7"), _ip("2001:db8:7::7"), False, 9_000_000),
    Host("peer", _ip("192.0.2.44"), _ip("2001:db8:44::44"), False, 35_000_000),
)
# At the NETWORK_FORWARD layer the traffic is that of a LAN client routed through this machine.
LAN_CLIENT = Host("lan-client", _ip("10.0.0.23"), _ip("fd00::23"), False, 300_000)

NAMES = ("example.com", "www.example.org", "api.example.net", "cdn.example.com",
         "mail.example.org", "updates.example.net", "static.example.com", "login.example.org")
