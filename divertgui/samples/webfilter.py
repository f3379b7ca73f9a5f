"""`divert webfilter`: WinDivert's webfilter sample.

Outbound HTTP requests are read as they leave; one whose host and path
match the blocklist is dropped, the server's end of the connection is
reset, and the browser gets a block page (or, with --reset, a RST), exactly
the hijack WinDivert's sample does. Like the sample, it reads the request
line and Host header from the first data packet of a request.

A blocklist entry is a host (`example.com`, which also covers its
subdomains, or an address, `[fd00::1]` for IPv6) or a host with a path
prefix (`example.com/ads/`), one per line in a file or given with --block;
`#` starts a comment.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
from typing import Callable, NamedTuple

from divertgui.engine import replies
from divertgui.samples import UsageError, port_number

PRIORITY = 404      # WinDivert's sample's, "Arbitrary."
BLOCK_PAGE = (b"HTTP/1.1 403 Forbidden\r\n"
              b"Connection: close\r\n"
              b"Content-Type: text/html\r\n"
              b"\r\n"
              b"<!doctype html>\n<html>\n\t<head>\n\t\t<title>BLOCKED!</title>\n\t</head>\n\t<body>\n"
              b"\t\t<h1>BLOCKED!</h1>\n\t\t<hr>\n\t\t<p>This URL has been blocked!</p>\n\t</body>\n</html>\n")
_REQUEST_LINE = re.compile(rb"^([A-Z]+) (\S+) HTTP/1\.[01]\r\n")
_HOST = re.compile(rb"\r\nHost:[ \t]*([^\r\n]*)\r\n", re.IGNORECASE)
_ENTRY = re.compile(r"^([A-Za-z0-9-][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\])(/\S*)?$")


class Entry(NamedTuple):
    host: str           # lower case, no trailing dot
    path: str           # a prefix of the request target's path, "/" for the whole host


class BlocklistError(UsageError):
    """A blocklist entry is not a host or host/path; the message says which and where."""


def parse_entry(text: str, where: str) -> Entry:
    match = _ENTRY.match(text)
    host = _host_name(match.group(1)) if match is not None else None
    if host is None:
        raise BlocklistError(f"{where}: {text!r} is not a host or host/path (e.g. example.com/ads/, "
                             f"[fd00::1]/ads/)")
    return Entry(host, match.group(2) or "/")


def _host_name(text: str) -> str | None:
    """A host as entries and requests are compared: lower case, no trailing dot, an IPv6 address
    without its brackets in its shortest form; None for brackets around no IPv6 address."""
    if not text.startswith("["):
        return text.lower().rstrip(".")
    try:
        return str(ipaddress.IPv6Address(text[1:-1]))
    except ValueError:
        return None


def _shown(host: str) -> str:
    """A host as a URL writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def read_blocklist(path: str) -> list[Entry]:
    entries = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            text = line.split("#", 1)[0].strip()
            if text:
                entries.append(parse_entry(text, f"{path}:{number}"))
    return entries


def requested(payload: bytes) -> tuple[str, str] | None:
    """(host, path) of the HTTP request that starts this payload, or None."""
    line = _REQUEST_LINE.match(payload)
    host = _HOST.search(payload)
    if line is None or host is None:
        return None
    target = line.group(2).decode("latin-1")
    if target.startswith(("http://", "https://")):
        target = "/" + target.split("/", 3)[3] if target.count("/") >= 3 else "/"
    name = host.group(1).decode("latin-1").strip()
    if name.startswith("["):
        name = name[:name.find("]") + 1] if "]" in name else name
    elif name.count(":") == 1:
        name = name.split(":")[0]
    return _host_name(name) or name.lower(), target


def blocked(entries: list[Entry], host: str, path: str) -> Entry | None:
    for entry in entries:
        if (host == entry.host or host.endswith("." + entry.host)) and path.startswith(entry.path):
            return entry
    return None


def add_parser(commands) -> argparse.ArgumentParser:
    text = ("block HTTP requests to listed hosts or URL prefixes: the server's end is reset and the "
            "browser gets a 403 block page (or a RST)")
    parser = commands.add_parser("webfilter", help=text, description=text)
    parser.add_argument("blocklists", metavar="BLOCKLIST", nargs="*",
                        help="files of host or host/path entries, one per line")
    parser.add_argument("--block", metavar="HOST[/PATH]", action="append", default=[],
                        help="a blocklist entry (repeatable)")
    parser.add_argument("--port", type=port_number, default=80, help="the HTTP server port (default 80)")
    parser.add_argument("--reset", action="store_true", help="answer the browser with a RST, not a block page")
    return parser


def filter_text(port: int) -> str:
    return f"outbound and !loopback and tcp.DstPort == {port} and tcp.PayloadLength > 0"


def run(args, open_handle: Callable, stop, say: Callable[[str], None], note: Callable[[str], None],
        poll_seconds: float) -> int:
    """open_handle(filter_text, priority) opens the handle; stop is true once a signal came;
    say prints what happens to the traffic, note how the command itself is doing."""
    entries = [parse_entry(text, "--block") for text in args.block]
    for path in args.blocklists:
        entries += read_blocklist(path)
    if not entries:
        raise BlocklistError("nothing to block: give a BLOCKLIST file or --block HOST[/PATH]")
    counts = {"passed": 0, "blocked": 0}
    with open_handle(filter_text(args.port), PRIORITY) as handle:
        note(f"webfilter: blocking {len(entries)} entries on port {args.port}; Ctrl+C to stop")
        while not stop:
            for packet in handle.recv_batch(64, poll_seconds):
                target = requested(packet.payload or b"")
                entry = blocked(entries, *target) if target is not None else None
                if entry is None:
                    handle.send(packet)
                    counts["passed"] += 1
                    continue
                handle.drop(packet)
                handle.send(replies.tcp_reset_onward(packet))
                answer = replies.tcp_reset(packet) if args.reset else replies.tcp_data_reply(packet, BLOCK_PAGE)
                handle.send(answer)
                counts["blocked"] += 1
                say(f"BLOCK http://{_shown(target[0])}{target[1]} (entry {_shown(entry.host)}{entry.path}; "
                    f"{'reset' if args.reset else 'block page'})")
    note(f"webfilter: blocked {counts['blocked']} requests, passed {counts['passed']} packets")
    return 0
