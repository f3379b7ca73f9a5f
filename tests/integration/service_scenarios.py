"""What a window does through a capture service, run as a separate process by
tests/integration/test_service_netns.py:

    python -m tests.integration.service_scenarios capture TARGET UID PORT [HOST]
    python -m tests.integration.service_scenarios refused TARGET UID
    python -m tests.integration.service_scenarios hold TARGET PORT COUNT [WORKERS]
    python -m tests.integration.service_scenarios workers TARGET PORT
    python -m tests.integration.service_scenarios open TARGET UID PATH
    python -m tests.integration.service_scenarios replay TARGET UID PATH

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
from tests.integration.conftest import wait_until, worker_processes


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


def open_file(target: str, uid: int, path: str) -> dict:
    """Ask the service to open the capture file `path`: what it answered, and the rows it sent."""
    become(uid)
    window = Window(target)
    assert wait(lambda: window.client.hello is not None), "no hello"
    window.client.post("open", path=path)
    wait(lambda: window.of("error") or any(e.get("source") == "file" for e in window.of("state")))
    return {"errors": [e["message"] for e in window.of("error")],
            "opened": [e["reason"] for e in window.of("state") if e.get("source") == "file"],
            "rows": len(window.store)}


def replay_file(target: str, uid: int, path: str) -> dict:
    """Ask the service to replay the capture file `path` as fast as it can: what it answered, and the rows."""
    become(uid)
    window = Window(target)
    assert wait(lambda: window.client.hello is not None), "no hello"
    window.client.post("start", source="replay", path=path, speed=0)
    wait(lambda: window.of("error") or len(window.store) >= 1)
    return {"errors": [e["message"] for e in window.of("error")], "rows": len(window.store)}


def hold(target: str, port: int, count: int, workers: int = 1) -> dict:
    """Hold `count` UDP datagrams to 127.0.0.1:port, 127.0.0.2:port..., report, then wait to be killed."""
    window = Window(target)
    wait(lambda: window.client.hello)
    window.client.post("start", source="live", mode="divert", filter=f"udp.DstPort == {port}", workers=workers)
    wait(lambda: window.of("state"), 60)
    window.client.post("set_intercept", filter="udp")
    time.sleep(0.3)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(count):
        sender.sendto(b"held %d" % i, (f"127.0.0.{i + 1}", port))
    wait(lambda: len(window.held()) >= count)
    return {"held": len(window.held()), "service_pid": window.client.hello["pid"],
            "state": window.of("state")[-1], "errors": [e["message"] for e in window.of("error")]}


FLOWS = 12      # IPv4 loopback destinations: the queue is chosen by a hash of the addresses


def udp_rows(store, port: int) -> list[bytes]:
    """The payloads of the window's UDP rows to `port`, in row order."""
    found = []
    for row in range(len(store)):
        packet = Packet(bytes(store.original(row) or store.raw(row)))
        if packet.udp is not None and packet.udp.dst_port == port:
            found.append(bytes(packet.payload))
    return found


def tcp_streams(store, port: int) -> dict[tuple, list[tuple[int, bytes]]]:
    """Each TCP connection's (sequence number, payload) of the packets to `port`, in row order."""
    streams: dict = {}
    for row in range(len(store)):
        packet = Packet(bytes(store.original(row) or store.raw(row)))
        if packet.tcp is not None and packet.tcp.dst_port == port and packet.payload:
            key = (str(packet.src_addr), str(packet.dst_addr), packet.tcp.src_port)
            streams.setdefault(key, []).append((packet.tcp.seq_num, bytes(packet.payload)))
    return streams


def hold_one_per_flow(window, sender, port: int, tag: bytes, already: int) -> list[dict]:
    for k in range(FLOWS):
        sender.sendto(b"%s %d" % (tag, k), (f"127.0.0.{k + 1}", port))
    wait(lambda: len(window.held()) >= already + FLOWS)
    return window.held()[already:]


def workers(target: str, port: int) -> dict:
    """A capture over 2 workers: several TCP and UDP flows captured once each, in order; held
    packets edited and forwarded; one worker killed while both hold packets."""
    report: dict = {}
    window = Window(target)
    report["hello"] = wait(lambda: window.client.hello)
    window.client.post("start", source="live", mode="divert", workers=2,
                       filter=f"udp.DstPort == {port} or tcp.DstPort == {port} or tcp.SrcPort == {port}")
    state = wait(lambda: window.of("state"), 60)
    report["state"] = state[-1] if state else None
    udp_in = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp_in.bind(("0.0.0.0", port))
    udp_in.settimeout(5)
    server = socket.create_server(("0.0.0.0", port))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = [b"flow %d datagram %d" % (k, i) for i in range(10) for k in range(FLOWS)]
    for datagram in sent:
        sender.sendto(datagram, (f"127.0.0.{int(datagram.split()[1]) + 1}", port))
    streams = {}
    for k in range(4):
        client = socket.create_connection((f"127.0.0.{k + 1}", port), timeout=5)
        accepted = server.accept()[0]
        accepted.settimeout(5)
        for i in range(5):
            client.sendall(b"connection %d message %d;" % (k, i))
            time.sleep(0.01)
        client.close()
        got = b""
        while chunk := accepted.recv(4096):
            got += chunk
        streams[k] = got.decode()
        accepted.close()
    report["tcp_received"] = streams
    report["udp_received"] = sorted(udp_in.recv(100).decode() for _ in sent)
    wait(lambda: len(udp_rows(window.store, port)) >= len(sent), 10)
    report["udp_rows"] = [payload.decode() for payload in udp_rows(window.store, port)]
    whole = sum(map(len, streams.values()))
    wait(lambda: sum(len(p) for segments in tcp_streams(window.store, port).values() for _, p in segments) >= whole,
         10)
    report["tcp_rows"] = [[[seq, payload.decode()] for seq, payload in segments]
                          for segments in tcp_streams(window.store, port).values()]

    # Held packets of every flow, edited and forwarded, whichever worker holds them.
    window.client.post("set_intercept", filter=f"udp.DstPort == {port}")
    time.sleep(0.3)
    held = hold_one_per_flow(window, sender, port, b"hold", 0)
    data = {}
    for entry in held:
        packet = Packet(bytearray(window.store.raw(entry["row"])))
        packet.payload = bytes(packet.payload).replace(b"hold", b"EDIT")
        data[str(entry["id"])] = bytes(packet.raw).hex()
    window.client.post("forward", ids=[entry["id"] for entry in held], data=data, fix=True)
    report["edited_received"] = sorted(udp_in.recv(100).decode() for _ in held)

    # One worker killed while every flow has a packet held: only its own are lost.
    held = hold_one_per_flow(window, sender, port, b"second", len(window.held()))
    service = report["hello"]["pid"]
    pool_workers = worker_processes(service)
    report["worker_processes"] = len(pool_workers)
    time.sleep(0.6)     # the pool reads its queues' lengths four times a second: it has seen them held
    os.kill(pool_workers[0], 9)
    released_before = sum(len(e["released"]) for e in window.of("held"))
    wait(lambda: sum(len(e["released"]) for e in window.of("held")) > released_before, 10)
    time.sleep(0.5)
    lost = [e for e in held if window.store.verdict(e["row"]) == Verdict.DROPPED]
    kept = [e for e in held if window.store.verdict(e["row"]) == Verdict.HELD]
    report["lost"], report["kept"] = len(lost), len(kept)
    window.client.post("forward_unmodified", ids=[e["id"] for e in kept])
    got = []
    try:
        while True:
            got.append(udp_in.recv(100).decode())
    except OSError:
        pass
    report["after_kill_received"] = sorted(got)
    report["kept_sent"] = sorted(bytes(Packet(bytes(window.store.raw(e["row"]))).payload).decode() for e in kept)
    wait(lambda: window.of("rows")[-1]["stats"].get("workers_restarted") == 1, 20)
    # The restarted worker takes its flows again, holding by the intercept filter in force, and takes commands.
    report["held_after_restart"] = len(hold_one_per_flow(window, sender, port, b"third", len(window.held())))
    window.client.post("forward_all")
    report["after_restart_received"] = sorted(udp_in.recv(100).decode() for _ in range(FLOWS))
    report["stats"] = {key: value for key, value in window.of("rows")[-1]["stats"].items()
                       if key in ("workers", "workers_restarted", "lost_with_worker", "held_lost_with_worker",
                                  "held")}
    # Stopping forwards what every worker holds.
    report["held_at_stop"] = len(hold_one_per_flow(window, sender, port, b"fourth", len(window.held())))
    window.client.post("stop")
    report["received_at_stop"] = sorted(udp_in.recv(100).decode() for _ in range(FLOWS))
    wait(lambda: not window.of("state")[-1]["running"], 30)
    report["errors"] = [e["message"] for e in window.of("error")]
    window.client.close()
    return report


def main(argv: list[str]) -> None:
    mode, target, *rest = argv
    if mode == "capture":
        report = capture(target, int(rest[0]), int(rest[1]), *rest[2:])
    elif mode == "refused":
        report = refused(target, int(rest[0]))
    elif mode == "open":
        report = open_file(target, int(rest[0]), rest[1])
    elif mode == "replay":
        report = replay_file(target, int(rest[0]), rest[1])
    elif mode == "workers":
        report = workers(target, int(rest[0]))
    else:
        report = hold(target, *map(int, rest))
    print(json.dumps(report), flush=True)
    if mode == "hold":
        time.sleep(60)


if __name__ == "__main__":
    main(sys.argv[1:])
