"""`divertgui --self-test --live`: the workbench against real traffic it makes
itself on loopback in the current network namespace, through its capture
service: TCP and UDP, IPv4 and IPv6; one TCP segment with a payload held,
edited in the window's editor, forwarded, and read back edited by the socket
it was sent to."""

from __future__ import annotations

import socket
import time

from divertgui.engine import privileges
from divertgui.engine.packet import Packet
from divertgui.engine.store_record import Verdict

PAYLOAD = b"divertgui live self-test"
EDITED = b"EDITED by the workbench!"       # the same length: the segment keeps its sequence space
DATAGRAMS = 3
TIMEOUT = 10.0


def capabilities_text() -> str:
    """This process's effective capabilities: `none`, or their names."""
    try:
        effective = privileges.current().effective
    except (privileges.PrivilegeError, ValueError) as exc:
        return f"unknown ({exc})"
    if not effective:
        return "none"
    names = [name for cap, name in privileges.CAPABILITY_NAMES.items() if effective >> cap & 1]
    others = effective & ~sum(1 << cap for cap in privileges.CAPABILITY_NAMES)
    return ",".join(names + ([f"others (mask {others:#x})"] if others else []))


class Sockets:
    """The traffic's endpoints, on ports the kernel chose."""

    def __init__(self):
        self.tcp4 = socket.create_server(("127.0.0.1", 0))
        self.tcp6 = socket.create_server(("::1", 0), family=socket.AF_INET6)
        self.udp4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp4.bind(("127.0.0.1", 0))
        self.udp6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.udp6.bind(("::1", 0))
        for sock in (self.tcp4, self.tcp6, self.udp4, self.udp6):
            sock.settimeout(TIMEOUT)
        self.ports = {name: getattr(self, name).getsockname()[1] for name in ("tcp4", "tcp6", "udp4", "udp6")}

    def capture_filter(self) -> str:
        p = self.ports
        return (f"(ip and (tcp.DstPort == {p['tcp4']} or tcp.SrcPort == {p['tcp4']} or udp.DstPort == {p['udp4']}))"
                f" or (ipv6 and (tcp.DstPort == {p['tcp6']} or tcp.SrcPort == {p['tcp6']}"
                f" or udp.DstPort == {p['udp6']}))")

    def close(self) -> None:
        for sock in (self.tcp4, self.tcp6, self.udp4, self.udp6):
            sock.close()


def _udp_round(sockets: Sockets) -> list[str]:
    problems = []
    for name, host in (("udp4", "127.0.0.1"), ("udp6", "::1")):
        receiver = getattr(sockets, name)
        with socket.socket(receiver.family, socket.SOCK_DGRAM) as sender:
            sent = [b"datagram %d" % i for i in range(DATAGRAMS)]
            for data in sent:
                sender.sendto(data, (host, sockets.ports[name]))
            got = []
            try:
                while len(got) < DATAGRAMS:
                    got.append(receiver.recv(100))
            except socket.timeout:
                pass
        if sorted(got) != sent:
            problems.append(f"{name}: {len(got)} of {DATAGRAMS} datagrams arrived")
    return problems


def _tcp6_round(sockets: Sockets) -> list[str]:
    with socket.create_connection(("::1", sockets.ports["tcp6"]), timeout=TIMEOUT) as client:
        server, _ = sockets.tcp6.accept()
        with server:
            server.settimeout(TIMEOUT)
            client.sendall(b"over IPv6")
            try:
                data = server.recv(100)
            except socket.timeout:
                data = b""
    return [] if data == b"over IPv6" else [f"tcp6: the server read {data!r}"]


def live_self_test(bench, wait_until) -> tuple[bool, str]:
    """(passed, summary line); `wait_until(predicate, seconds)` runs the event loop while waiting."""
    window = bench.window
    started = time.monotonic()
    sockets = Sockets()
    try:
        window.options.source = "live"
        window.capture_filter.set_text(sockets.capture_filter())
        window.mode.setCurrentText("divert")
        # A service carries out its commands in order: once it says its capture runs, the
        # intercept filter sent before the start is in force there too.
        window.intercept.filter.set_text(f"tcp.DstPort == {sockets.ports['tcp4']} and tcp.PayloadLength > 0")
        window.intercept.filter.submit()
        window.start_capture()
        # The traffic is this namespace's, which the first host's service captures; the
        # window runs as soon as any of its hosts does.
        first = bench.hosts.links[0].index
        if not wait_until(lambda: first in bench.hosts.running(), TIMEOUT) or window.source_name != "live":
            reason = window.state_reason or (window.errors[-1]["message"] if window.errors else "no answer")
            return False, f"live capture did not start: {reason}"
        problems = _udp_round(sockets) + _tcp6_round(sockets)
        client = socket.create_connection(("127.0.0.1", sockets.ports["tcp4"]), timeout=TIMEOUT)
        server, _ = sockets.tcp4.accept()
        server.settimeout(TIMEOUT)
        with client, server:
            client.sendall(PAYLOAD)
            if not wait_until(lambda: window.queue_model.rowCount() > 0, TIMEOUT):
                return False, "the TCP segment with the payload was not held"
            panel = window.intercept
            hold_id = window.queue_model.hold_id(0)
            row = window.queue_model.store_row(0)
            panel.select(hold_id)
            panel.editor.tabs.setCurrentIndex(0)
            panel.editor.form.field("payload", "bytes").setText(EDITED.decode())
            window.intercept.filter.set_text("false")
            window.intercept.filter.submit()
            panel.forward()
            try:
                received = server.recv(100)
            except socket.timeout:
                received = b""
        if received != EDITED:
            problems.append(f"the receiving socket read {received!r}, not the edited {EDITED!r}")
        wait_until(lambda: bench.store.verdict(row) == Verdict.MODIFIED, 5)
        if bench.store.verdict(row) != Verdict.MODIFIED:
            problems.append(f"row {row + 1} is {bench.store.verdict(row).name}, not MODIFIED")
        elif Packet(bench.store.raw(row)).payload != EDITED:
            problems.append(f"row {row + 1} does not show the edited bytes")
        protocols = bench.store.column("protocol")
        versions = bench.store.column("ip_version")
        for version, protocol, name in ((4, 6, "TCP/IPv4"), (6, 6, "TCP/IPv6"), (4, 17, "UDP/IPv4"),
                                        (6, 17, "UDP/IPv6")):
            if not ((versions == version) & (protocols == protocol)).any():
                problems.append(f"no {name} packet in the list")
        window.stop_capture()
        wait_until(lambda: not window.running, 5)
    finally:
        sockets.close()
    host = (bench.hello or {}).get("host", "this process")
    summary = (f"{len(bench.store)} packets from the service on {host} in {time.monotonic() - started:.1f} s "
               f"(TCP and UDP, IPv4 and IPv6), a TCP segment held, edited and read back edited; "
               f"capabilities: {capabilities_text()}")
    if problems:
        return False, "; ".join(problems) + f"; capabilities: {capabilities_text()}"
    return True, f"live self-test passed: {summary}"
