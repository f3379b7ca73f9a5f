"""`divert streamdump PORT`: WinDivert's streamdump sample.

Outbound TCP connections to PORT are "reflected" into inbound connections
to a proxy on this host (PROXY_PORT), which prints each chunk of the stream
and relays it to the real server through ALT_PORT:

    client ->  server:PORT        becomes  server:PORT -> client  reflected into  proxy:PROXY_PORT (inbound)
    proxy  ->  server:ALT_PORT    becomes  proxy -> server:PORT   (the server's answers come back from ALT_PORT)

as the sample's packet loop does it, for IPv4 and IPv6. Each relayed chunk
is printed as `[LEN] > text` (client to server) or `[LEN] < text`.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import threading
from typing import Callable

from divertgui.samples import port_number

PRIORITY = 123          # WinDivert's sample's, "Arbitrary."
PROXY_PORT, ALT_PORT = 34010, 43010
MAX_LINE = 65
CHUNK = 8192


def ports_for(port: int) -> tuple[int, int]:
    """(proxy port, alt port): the sample's, moved by one when PORT is one of them."""
    return (PROXY_PORT + 1 if port == PROXY_PORT else PROXY_PORT), (ALT_PORT + 1 if port == ALT_PORT else ALT_PORT)


def filter_text(port: int, proxy_port: int, alt_port: int) -> str:
    return (f"tcp and (tcp.DstPort == {port} or tcp.DstPort == {proxy_port} or tcp.DstPort == {alt_port} or "
            f"tcp.SrcPort == {port} or tcp.SrcPort == {proxy_port} or tcp.SrcPort == {alt_port})")


def rewrite(packet, port: int, proxy_port: int, alt_port: int) -> None:
    """The sample's main loop on one packet: reflect or redirect it in place."""
    tcp, address = packet.tcp, packet.address
    if address.outbound:
        if tcp.dst_port == port:
            # Reflect: PORT ---> PROXY
            packet.src_addr, packet.dst_addr = packet.dst_addr, packet.src_addr
            tcp.dst_port = proxy_port
            address.outbound = False
        elif tcp.src_port == proxy_port:
            # Reflect: PROXY ---> PORT
            packet.src_addr, packet.dst_addr = packet.dst_addr, packet.src_addr
            tcp.src_port = port
            address.outbound = False
        elif tcp.dst_port == alt_port:
            # Redirect: ALT ---> PORT
            tcp.dst_port = port
    elif tcp.src_port == port:
        # Redirect: PORT ---> ALT
        tcp.src_port = alt_port
    packet.recalculate_checksums()


def printable(chunk: bytes) -> str:
    text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk[:MAX_LINE])
    return text + ("..." if len(chunk) > MAX_LINE else "")


class Proxy:
    """Accepts the reflected connections and relays each to the server through ALT_PORT, printing the stream."""

    def __init__(self, proxy_port: int, alt_port: int, say: Callable[[str], None]):
        self.alt_port, self.say = alt_port, say
        self._print_lock = threading.Lock()
        self.listener = socket.create_server(("::", proxy_port), family=socket.AF_INET6, dualstack_ipv6=True,
                                             reuse_port=False)
        self.listener.settimeout(0.2)
        self._closed = threading.Event()
        self._connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="streamdump-proxy", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, peer = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client, peer), daemon=True).start()

    def _connect(self, client: socket.socket, peer) -> None:
        # The reflected connection comes "from" the server the client asked for.
        host = peer[0][7:] if peer[0].startswith("::ffff:") else peer[0]
        try:
            server = socket.create_connection((host, self.alt_port), timeout=5)
        except OSError as exc:
            self.say(f"streamdump: cannot reach {host} port {self.alt_port}: {exc.strerror or exc}")
            client.close()
            return
        server.settimeout(None)
        self._connections += [client, server]
        back = threading.Thread(target=self._relay, args=(server, client, "<"), daemon=True)
        back.start()
        self._relay(client, server, ">")
        back.join()
        client.close()
        server.close()

    def _relay(self, source: socket.socket, sink: socket.socket, arrow: str) -> None:
        while True:
            try:
                chunk = source.recv(CHUNK)
            except OSError:
                chunk = None
            if not chunk:
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR if chunk == b"" else socket.SHUT_RDWR)
                return
            with self._print_lock:
                self.say(f"[{len(chunk):04d}] {arrow} {printable(chunk)}")
            try:
                sink.sendall(chunk)
            except OSError:
                with contextlib.suppress(OSError):
                    source.shutdown(socket.SHUT_RDWR)
                return

    def close(self) -> None:
        self._closed.set()
        self.listener.close()
        for connection in self._connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=2)


def add_parser(commands) -> argparse.ArgumentParser:
    text = ("print the TCP streams to PORT: connections are reflected through a local proxy "
            f"(port {PROXY_PORT}) that prints and relays them (to the server via port {ALT_PORT})")
    parser = commands.add_parser("streamdump", help=text, description=text)
    parser.add_argument("port", metavar="PORT", type=port_number, help="the server port whose streams are printed")
    return parser


def run(args, open_handle: Callable, stop, say: Callable[[str], None], note: Callable[[str], None],
        poll_seconds: float) -> int:
    """open_handle(filter_text, priority) opens the handle; stop is true once a signal came;
    say prints what happens to the traffic, note how the command itself is doing."""
    proxy_port, alt_port = ports_for(args.port)
    handle = open_handle(filter_text(args.port, proxy_port, alt_port), PRIORITY)
    proxy = Proxy(proxy_port, alt_port, say)
    try:
        note(f"streamdump: streams to port {args.port} through proxy port {proxy_port}; Ctrl+C to stop")
        while not stop:
            packets = handle.recv_batch(64, poll_seconds)
            for packet in packets:
                if packet.tcp is not None:
                    rewrite(packet, args.port, proxy_port, alt_port)
            if packets:
                handle.send_batch(packets)
    finally:
        handle.close()
        proxy.close()
    return 0
