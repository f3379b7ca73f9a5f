"""What a window does through a capture service, run as a separate process by
tests/integration/test_service_netns.py:

    python -m tests.integration.service_scenarios capture TARGET UID PORT [HOST]
    python -m tests.integration.service_scenarios refused TARGET UID
    python -m tests.integration.service_scenarios hold TARGET PORT COUNT

The process imports everything as whoever started it, then (for a UID other
than 0) becomes that user with no capabilities: the interpreter may live
where that user cannot read it. One JSON line on stdout reports what happened.
`capture` talks TCP to HOST (default 127.0.0.1, where it listens itself; any
other host must run an echo server on PORT), and UDP over ::1 on loopback.
SCENARIO_CLIENT_OPTIONS (JSON) may give the client remote_command and ssh_options.
"""

from __future__ import annotations

import encodings.idna  # noqa: F401  (looked up lazily by socket calls; unreadable once the user changes)
import json
import os
import socket
import sys
import time

from divertgui.engine import privileges
from divertgui.engine.packet import Packet
from divertgui.engine.store import CaptureStore
from divertgui.engine.store_record import Verdict
from divertgui.service.client import ServiceClient
from tests.integration.conftest import wait_until


def wait(condition, seconds: float = 10.0):
    return wait_until(condition, seconds, 0.01)

PAYLOAD = b"original payload!"
EDITED = b"EDITED payload!!!"


def become(uid: int) -> None:
    if uid:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)


class Window:
    def __init__(self, target: str):
        self.store = CaptureStore()
        self.events: list[dict] = []
        self.client = ServiceClient(target, self.store, self.events.append, **_client_options())
        self.client.start()

    def of(self, kind: str) -> list[dict]:
        return [e for e in list(self.events) if e["type"] == kind]

    def held(self) -> list[dict]:
        return [h for e in self.of("held") for h in e["held"]]


def _client_options() -> dict:
    options = json.loads(os.environ.get("SCENARIO_CLIENT_OPTIONS", "{}"))
    return {key: options[key] for key in ("remote_command", "ssh_options") if key in options}


def capture(target: str, uid: int, port: int, host: str = "127.0.0.1") -> dict:
    become(uid)
    report = {"uid": os.getuid(), "effective_capabilities": privileges.current().effective}
    window = Window(target)
    report["hello"] = wait(lambda: window.client.hello)
    window.client.post("start", source="live", mode="divert",
                       filter=f"tcp.DstPort == {port} or tcp.SrcPort == {port} or udp.DstPort == {port}")
    state = wait(lambda: window.of("state"))
    report["state"] = state[-1] if state else None
    window.client.post("set_intercept", filter=f"tcp.DstPort == {port} and tcp.PayloadLength > 0")
    time.sleep(0.3)
    loopback = host == "127.0.0.1"
    if loopback:
        server = socket.create_server((host, port))
    sender = socket.create_connection((host, port), timeout=5)
    # On loopback the receiving socket is ours; elsewhere the echo of the receiving socket.
    receiver = server.accept()[0] if loopback else sender
    receiver.settimeout(10)
    sender.sendall(PAYLOAD)
    held = wait(lambda: window.held())
    if held:
        first = held[0]
        packet = Packet(bytearray(window.store.raw(first["row"])))
        report["held_payload"] = bytes(packet.payload).decode()
        packet.payload = EDITED
        window.client.post("set_intercept", filter="")
        window.client.post("forward", ids=[first["id"]], data={str(first["id"]): bytes(packet.raw).hex()},
                           fix=True)
        try:
            report["received"] = receiver.recv(100).decode()
        except OSError as exc:
            report["received"] = repr(exc)
        wait(lambda: window.store.verdict(first["row"]) == Verdict.MODIFIED, 5)
        report["verdict"] = window.store.verdict(first["row"]).name
    report["errors"] = [e["message"] for e in window.of("error")]
    if not loopback:
        window.client.close()
        return report
    udp_in = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp_in.bind(("::1", port))
    udp_in.settimeout(5)
    udp_out = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    for i in range(3):
        udp_out.sendto(b"datagram %d" % i, ("::1", port))
    report["udp_received"] = [udp_in.recv(100).decode() for _ in range(3)]
    wait(lambda: (window.store.column("protocol") == 17).sum() >= 3, 5)
    report["udp_rows"] = int((window.store.column("protocol") == 17).sum())
    report["errors"] = [e["message"] for e in window.of("error")]
    window.client.close()
    return report


def refused(target: str, uid: int) -> dict:
    become(uid)
    window = Window(target)
    wait(lambda: window.of("error") and not window.client.connected)
    return {"errors": [e["message"] for e in window.of("error")], "hello": window.client.hello}


def hold(target: str, port: int, count: int) -> dict:
    """Hold `count` UDP datagrams to 127.0.0.1:port, report, then wait to be killed."""
    window = Window(target)
    wait(lambda: window.client.hello)
    window.client.post("start", source="live", mode="divert", filter=f"udp.DstPort == {port}")
    wait(lambda: window.of("state"))
    window.client.post("set_intercept", filter="udp")
    time.sleep(0.3)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(count):
        sender.sendto(b"held %d" % i, ("127.0.0.1", port))
    wait(lambda: len(window.held()) >= count)
    return {"held": len(window.held()), "service_pid": window.client.hello["pid"],
            "state": window.of("state")[-1], "errors": [e["message"] for e in window.of("error")]}


def main(argv: list[str]) -> None:
    mode, target, *rest = argv
    if mode == "capture":
        report = capture(target, int(rest[0]), int(rest[1]), *rest[2:])
    elif mode == "refused":
        report = refused(target, int(rest[0]))
    else:
        report = hold(target, int(rest[0]), int(rest[1]))
    print(json.dumps(report), flush=True)
    if mode == "hold":
        time.sleep(60)


if __name__ == "__main__":
    main(sys.argv[1:])
