"""Network conditions on real traffic: a Divert handle in namespace `a` runs the rules
pipeline (run_conditions) over UDP probes and TCP connections to namespace `b`.

Probe client and echo server run as separate processes, so that their timing
does not share an interpreter with the handle. CLOCK_MONOTONIC is one clock
for every namespace and process, so one-way delays are measured directly.
In `b`, where nothing is diverted, a datagram's arrival is the time the
kernel received it (SO_TIMESTAMPNS), not when the server got to run and read
it; in `a` the kernel stamps a packet before the handle holds it, so there
the client's reading time is used.
"""

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy
import pytest

from divertgui.engine.address import Param
from divertgui.engine.backends import netfilter_rules
from divertgui.engine.handle import Divert
from divertgui.engine.rules import (Bandwidth, Drop, Duplicate, Lag, OutOfOrder, PayloadReplace, Pipeline,
                                    Reset, Tamper, Throttle, rules_from_dicts)
from divertgui.engine.rules.runner import run_conditions
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.netns

MS = 1_000_000

# recv_stamped(sock): (payload, peer, CLOCK_MONOTONIC ns at which the kernel received it).
# The kernel stamps in CLOCK_REALTIME; the two clocks' offset is read right after, between
# two monotonic readings close enough together that no preemption fell between them.
KERNEL_ARRIVAL = r"""
import socket, struct, time
SO_TIMESTAMPNS = 35
def stamping(sock):
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
def recv_stamped(sock):
    payload, ancillary, _flags, peer = sock.recvmsg(65535, 64)
    while True:
        before, real, after = time.monotonic_ns(), time.time_ns(), time.monotonic_ns()
        if after - before < 50_000:
            break
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = struct.unpack("qq", value[:16])
            return payload, peer, sec * 1_000_000_000 + nsec - real + (before + after) // 2
    raise RuntimeError("a datagram came without its kernel timestamp")
"""

SERVER = KERNEL_ARRIVAL + r"""
import json, select, socket, sys, time
host, port, control, echo = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
family = socket.AF_INET6 if ":" in host else socket.AF_INET
data = socket.socket(family, socket.SOCK_DGRAM)
data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
data.bind((host, port))
stamping(data)
ctl = socket.socket(family, socket.SOCK_DGRAM)
ctl.bind((host, control))
print("ready", flush=True)
got = []
end = time.monotonic() + 60
def take():
    payload, peer, now = recv_stamped(data)
    got.append([now, payload.hex()])
    if echo:
        data.sendto(payload + now.to_bytes(8, "big"), peer)
while time.monotonic() < end:
    readable, _, _ = select.select([data, ctl], [], [], 1)
    if data in readable:
        take()
    if ctl in readable:
        data.setblocking(False)
        try:
            while True:
                take()
        except BlockingIOError:
            pass
        break
print(json.dumps(got), flush=True)
"""

CLIENT = r"""
import json, socket, sys, threading, time
host, port, count, interval, size, wait = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
sock = socket.socket(family, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
sock.settimeout(0.05)
replies, sent, done = [], [], threading.Event()
def receive():
    while not done.is_set():
        try:
            payload = sock.recv(65535)
        except socket.timeout:
            continue
        replies.append([time.monotonic_ns(), payload.hex()])
receiver = threading.Thread(target=receive)
receiver.start()
start = time.monotonic_ns()
for i in range(count):
    due = start + int(i * interval * 1e6)
    pause = (due - time.monotonic_ns()) / 1e9
    if pause > 0:
        time.sleep(pause)
    now = time.monotonic_ns()
    sock.sendto((i.to_bytes(4, "big") + now.to_bytes(8, "big")).ljust(size, b"."), (host, port))
    sent.append([i, now])
time.sleep(wait)
done.set()
receiver.join()
print(json.dumps({"sent": sent, "replies": replies}), flush=True)
"""


# Wakes up every half millisecond and reports every gap of more than 3 ms: moments when
# the machine (other processes, the hypervisor) did not run us, which no rule can help.
STALL_MONITOR = r"""
import json, select, sys, time
stalls, last = [], time.monotonic_ns()
while True:
    readable, _, _ = select.select([sys.stdin], [], [], 0.0005)
    now = time.monotonic_ns()
    if now - last > 3_000_000:
        stalls.append(round((now - last) / 1e6, 1))
    last = now
    if readable:
        break
print(json.dumps(stalls), flush=True)
"""


class StallMonitor:
    def __enter__(self):
        self.process = subprocess.Popen([sys.executable, "-c", STALL_MONITOR], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        self.stalls = []
        return self

    def __exit__(self, *exc):
        out, _ = self.process.communicate("stop\n", timeout=10)
        self.stalls = json.loads(out)


def probe_id(payload: bytes) -> int:
    return int.from_bytes(payload[:4], "big")


class Echo:
    """The echo (or sink) server in `b`; `stop()` returns what it received: [(ns, bytes)]."""

    def __init__(self, veth, port: int, echo: bool = True):
        self.veth, self.port = veth, port
        self.process = veth.b.popen([sys.executable, "-c", SERVER, veth.b_v4, str(port), str(port + 1),
                                     "1" if echo else "0"], stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline().strip() == "ready"

    def stop(self) -> list:
        with self.veth.a.entered():
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ctl:
                ctl.sendto(b"quit", (self.veth.b_v4, self.port + 1))
        out, _ = self.process.communicate(timeout=20)
        return [(ns, bytes.fromhex(data)) for ns, data in json.loads(out)]


def probes(veth, port: int, count: int, interval_ms: float, size: int = 64, wait: float = 0.3) -> dict:
    """Run the probe client in `a`; {"sent": [(id, ns)], "replies": [(ns, bytes)]}."""
    process = veth.a.popen([sys.executable, "-c", CLIENT, veth.b_v4, str(port), str(count), str(interval_ms),
                            str(size), str(wait)], stdout=subprocess.PIPE, text=True)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    result = json.loads(out)
    return {"sent": [tuple(s) for s in result["sent"]],
            "replies": [(ns, bytes.fromhex(data)) for ns, data in result["replies"]]}


def round_trips_ms(result) -> numpy.ndarray:
    sent = dict(result["sent"])
    return numpy.array([(ns - sent[probe_id(data)]) / MS for ns, data in result["replies"]])


def there_ms(result) -> numpy.ndarray:
    """Client -> server delay of each echoed probe."""
    return one_way_ms(result)[0]


def one_way_ms(result) -> tuple[numpy.ndarray, numpy.ndarray]:
    """(client -> server, server -> client) delays of each echoed probe."""
    sent = dict(result["sent"])
    there, back = [], []
    for ns, data in result["replies"]:
        arrived = int.from_bytes(data[-8:], "big")
        there.append((arrived - sent[probe_id(data)]) / MS)
        back.append((ns - arrived) / MS)
    return numpy.array(there), numpy.array(back)


@contextlib.contextmanager
def conditions(rules, filter_text: str, seed: int = 1):
    """Divert `filter_text` in the current namespace and run `rules` over it on a thread;
    the yielded dict receives run_conditions' counters when the block ends."""
    pipeline = Pipeline(rules, seed)
    stop, result, errors = threading.Event(), {}, []

    def run():
        try:
            result.update(run_conditions(handle, pipeline, stop))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    handle = Divert(filter_text)
    handle.set_param(Param.QUEUE_LENGTH, 16384)
    with handle:
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield result
        finally:
            stop.set()
            thread.join(10)
    assert not errors, errors
    assert not thread.is_alive()


def udp_filter(port: int) -> str:
    return f"udp.DstPort == {port} or udp.SrcPort == {port}"


# -- lag ----------------------------------------------------------------------------------------


def probe_together(veth, ports, count, interval_ms):
    """Probe several echo ports at once, so that each flow meets the same machine load."""
    results = [None] * len(ports)

    def run(i):
        results[i] = probes(veth, ports[i], count, interval_ms)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(ports))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_lag_is_accurate(veth):
    # Flow `lagged` meets the rule; flow `plain`, probed at the same time, is the baseline.
    # The lag is outbound, so it is measured one way, from the send to the echo server's
    # kernel receiving it: how late the echo server (or the client, for a round trip) got
    # to run on a busy machine is no part of it.
    # A lagged packet is in flight for 50 ms, so a machine-wide stall (other processes, the
    # hypervisor) shows in its tail far more than in the baseline's: a measurement during which
    # the stall monitor saw the machine stop is taken again, at most three times in all.
    lagged, plain = 40101, 40103
    echoes = [Echo(veth, lagged), Echo(veth, plain)]
    both = f"{udp_filter(lagged)} or {udp_filter(plain)}"
    try:
        with veth.a.entered():
            for _attempt in range(3):
                rule = Lag(filter=udp_filter(lagged), direction="outbound", outbound_ms=50)
                with StallMonitor() as monitor, conditions([rule], both) as fifty:
                    with_lag, baseline = map(there_ms, probe_together(veth, [lagged, plain], 200, 5))
                added_p50 = numpy.percentile(with_lag, 50) - numpy.percentile(baseline, 50)
                added_p99 = numpy.percentile(with_lag, 99) - numpy.percentile(baseline, 99)
                if (abs(added_p50 - 50) <= 2 and abs(added_p99 - 50) <= 5) or not monitor.stalls:
                    break
            # 0 ms of lag both ways (a round trip), against a flow that is not diverted at all.
            with conditions([Lag(inbound_ms=0, outbound_ms=0)], udp_filter(lagged)) as zero:
                zero_lag, undiverted = map(round_trips_ms, probe_together(veth, [lagged, plain], 200, 5))
    finally:
        for echo in echoes:
            echo.stop()
    assert len(with_lag) == len(baseline) == len(zero_lag) == len(undiverted) == 200
    assert abs(added_p50 - 50) <= 2, (added_p50, numpy.percentile(baseline, 50), monitor.stalls)
    assert abs(added_p99 - 50) <= 5, (added_p99, numpy.percentile(baseline, 99), monitor.stalls)
    assert numpy.percentile(zero_lag, 50) - numpy.percentile(undiverted, 50) < 1.0
    assert fifty["rules"][0]["matched"] == 200 and fifty["rules"][0]["delayed"] == 200
    assert zero["rules"][0]["matched"] == 400 and zero["rules"][0]["delayed"] == 0


def test_inbound_and_outbound_lags_differ(veth):
    lagged, plain = 40105, 40107
    echoes = [Echo(veth, lagged), Echo(veth, plain)]
    both = f"{udp_filter(lagged)} or {udp_filter(plain)}"
    try:
        with veth.a.entered():
            rule = Lag(filter=udp_filter(lagged), inbound_ms=10, outbound_ms=30)
            with conditions([rule], both):
                (there, back), (base_there, base_back) = map(one_way_ms, probe_together(
                    veth, [lagged, plain], 150, 5))
    finally:
        for echo in echoes:
            echo.stop()
    assert len(there) == len(base_there) == 150
    assert abs(numpy.percentile(there, 50) - numpy.percentile(base_there, 50) - 30) <= 2
    assert abs(numpy.percentile(back, 50) - numpy.percentile(base_back, 50) - 10) <= 2


# -- loss, copies, order ------------------------------------------------------------------------


def test_drop_loses_its_share(veth):
    port = 40105
    sink = Echo(veth, port, echo=False)
    with veth.a.entered():
        with conditions([Drop(chance=30.0)], udp_filter(port), seed=11) as counts:
            sent = probes(veth, port, 2000, 0.25, wait=0.2)["sent"]
    received = sink.stop()
    lost = 1 - len(received) / len(sent)
    assert abs(lost - 0.30) <= 0.03
    assert counts["rules"][0]["dropped"] == len(sent) - len(received)


def test_duplicate_and_reorder_seen_by_the_receiver(veth):
    port = 40107
    sink = Echo(veth, port, echo=False)
    with veth.a.entered():
        rules = [OutOfOrder(chance=20.0, window=3), Duplicate(count=3, chance=25.0)]
        with conditions(rules, udp_filter(port), seed=3) as counts:
            probes(veth, port, 400, 1, wait=0.3)
    received = [probe_id(data) for _, data in sink.stop()]
    duplicated = counts["rules"][1]["duplicated"]
    assert duplicated > 0 and len(received) == 400 + duplicated
    assert set(received) == set(range(400))
    first_seen = list(dict.fromkeys(received))
    overtaken = sum(1 for i in range(1, len(first_seen)) if first_seen[i] < first_seen[i - 1])
    assert overtaken >= counts["rules"][0]["reordered"] // 2 > 0
    assert sum(1 for n in set(received) if received.count(n) == 3) == duplicated // 2


def test_throttle_releases_bursts(veth):
    port = 40109
    sink = Echo(veth, port, echo=False)
    with veth.a.entered():
        with conditions([Throttle(frame_ms=50, chance=100.0)], udp_filter(port)):
            probes(veth, port, 60, 5, wait=0.2)
    arrivals = [ns for ns, _ in sink.stop()]
    assert len(arrivals) == 60
    gaps = numpy.diff(arrivals) / MS
    bursts = 1 + int(numpy.sum(gaps > 3))
    # 300 ms of probes every 5 ms arrive as a handful of bursts about 50 ms apart, not 60 singles.
    assert bursts <= 8
    assert numpy.all(gaps[gaps > 3] >= 40)


def test_bandwidth_caps_the_rate(veth):
    port = 40111
    sink = Echo(veth, port, echo=False)
    with veth.a.entered():
        with conditions([Bandwidth(kbps=800, queue_limit=1000)], udp_filter(port)):
            probes(veth, port, 100, 0, size=972, wait=1.5)      # 100 packets of 1000 IP bytes at once
    arrivals = [ns for ns, _ in sink.stop()]
    assert len(arrivals) == 100
    seconds = (arrivals[-1] - arrivals[0]) / 1e9
    # 99 packets after the first leave at 100 kB/s (less a 1514-byte bucket): about 0.975 s.
    assert 0.9 < seconds < 1.1


def test_tamper_changes_what_arrives(veth):
    port = 40113
    sink = Echo(veth, port, echo=False)
    with veth.a.entered():
        with conditions([Tamper(chance=100.0, flips=1)], udp_filter(port)):
            sent = probes(veth, port, 40, 2, size=200, wait=0.2)["sent"]
    received = [data for _, data in sink.stop()]
    assert len(received) == len(sent) == 40
    assert all(len(data) == 200 for data in received)
    pristine = {(i.to_bytes(4, "big") + ns.to_bytes(8, "big")).ljust(200, b".") for i, ns in sent}
    assert not pristine & set(received)

    sink = Echo(veth, port, echo=False)
    with veth.a.entered():
        with conditions([Tamper(chance=100.0, redo_checksum=False)], udp_filter(port)) as counts:
            probes(veth, port, 40, 2, size=200, wait=0.2)
    # Left with a broken checksum, every damaged datagram is discarded by the receiving stack.
    assert counts["rules"][0]["modified"] == 40 and sink.stop() == []


# -- TCP: reset, payload replace ----------------------------------------------------------------


def _server_socket(veth, port):
    with veth.b.entered():
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((veth.b_v4, port))
        server.listen(1)
        server.settimeout(5)
    return server


def test_reset_cuts_the_connection_at_both_ends(veth):
    port = 40115
    server = _server_socket(veth, port)
    server_saw = []

    def serve():
        conn, _ = server.accept()
        conn.settimeout(5)
        try:
            server_saw.append(conn.recv(100))
        except OSError as exc:
            server_saw.append(exc)
        conn.close()

    serving = threading.Thread(target=serve)
    serving.start()
    with veth.a.entered():
        rule = Reset(chance=100.0, filter="tcp.PayloadLength > 0", direction="outbound")
        with conditions([rule], f"tcp.DstPort == {port} or tcp.SrcPort == {port}") as counts:
            client = socket.create_connection((veth.b_v4, port), timeout=5)
            client.sendall(b"ping")
            with pytest.raises(ConnectionResetError):
                client.recv(100)
            client.close()
            serving.join(10)
    server.close()
    assert len(server_saw) == 1 and isinstance(server_saw[0], ConnectionResetError)
    assert counts["rules"][0]["reset"] == 1


def test_payload_replace_over_a_real_http_connection(veth):
    port = 40117
    server = _server_socket(veth, port)
    chunks = [b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n", b"hello world\n", b"and hello again, hello\n",
              b"nothing to change\n", b"a last hello\n"]
    outcome = {}

    def serve():
        conn, _ = server.accept()
        conn.settimeout(5)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        outcome["request"] = conn.recv(1000)
        for chunk in chunks:
            conn.sendall(chunk)
            time.sleep(0.02)        # one segment per chunk
        conn.shutdown(socket.SHUT_WR)
        try:
            # The client's FIN arrives and is accepted only if its acknowledgements make sense.
            outcome["client_fin"] = conn.recv(100) == b""
        except OSError as exc:
            outcome["client_fin"] = exc
        conn.close()

    serving = threading.Thread(target=serve)
    serving.start()
    with veth.a.entered():
        rule = PayloadReplace(filter=f"tcp.SrcPort == {port}", direction="inbound", find="hello", replace="HELLO!!")
        with conditions([rule], f"tcp.DstPort == {port} or tcp.SrcPort == {port}") as counts:
            client = socket.create_connection((veth.b_v4, port), timeout=5)
            client.sendall(b"GET / HTTP/1.0\r\n\r\n")
            response = b""
            while True:
                part = client.recv(4096)
                if not part:
                    break
                response += part
            client.close()
            serving.join(10)
    server.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK")
    assert body == b"".join(chunks[1:]).replace(b"hello", b"HELLO!!")
    assert outcome == {"request": b"GET / HTTP/1.0\r\n\r\n", "client_fin": True}
    assert counts["rules"][0]["modified"] == 3 and counts["rules"][0]["seq_adjusted"] > 0


# -- everything at once -------------------------------------------------------------------------


def test_every_rule_at_once_accounts_for_every_packet(veth):
    port = 40119
    sink = Echo(veth, port, echo=False)
    rules = rules_from_dicts([
        {"kind": "lag", "inbound_ms": 3, "outbound_ms": 5, "jitter_ms": 2},
        {"kind": "drop", "chance": 10.0},
        {"kind": "throttle", "frame_ms": 10, "chance": 2.0},
        {"kind": "out_of_order", "chance": 10.0},
        {"kind": "duplicate", "count": 2, "chance": 10.0},
        {"kind": "tamper", "chance": 10.0},
        {"kind": "reset", "chance": 50.0},
        {"kind": "bandwidth", "kbps": 20000, "queue_limit": 10},
        {"kind": "set_field", "fields": {"ttl": 33}},
        {"kind": "payload_replace", "find": "....", "replace": "!"},
    ])
    with veth.a.entered():
        with conditions(rules, f"outbound and udp.DstPort == {port}", seed=5) as counts:
            sent = probes(veth, port, 1000, 0.5, size=100, wait=0.3)["sent"]
    received = sink.stop()
    assert counts["received"] == len(sent) == 1000
    assert counts["held"] == 0 and counts["send_errors"] == 0
    assert counts["dropped"] > 0 and counts["created"] > 0
    # From the counters and from the receiver: what arrived plus what the rules dropped is what was sent.
    assert counts["sent"] + counts["dropped"] == counts["received"] + counts["created"]
    assert len(received) + counts["dropped"] == len(sent) + counts["created"]


# -- stopping, and the command line -------------------------------------------------------------


def test_stopping_releases_every_held_packet(veth):
    port = 40125
    sink = Echo(veth, port, echo=False)
    with veth.a.entered():
        with conditions([Lag(outbound_ms=10_000), Throttle(frame_ms=1000, chance=100.0)], udp_filter(port)) as counts:
            sent = probes(veth, port, 30, 1, wait=0.2)["sent"]
    received = sink.stop()
    assert len(received) == len(sent) == 30
    assert counts["rules"][0]["delayed"] == 30 and counts["held"] == 0 and counts["sent"] == 30


def test_conditions_command_runs_until_stopped_and_prints_counters(veth):
    from tests.integration.test_cli_netns import finish, start_cli

    port = 40127
    sink = Echo(veth, port, echo=False)
    process = start_cli(veth.a, "conditions", f"outbound and udp.DstPort == {port}", "--lag", "0:5",
                        "--drop", "50", "--duplicate", "2:100", "--seed", "4")
    try:
        probes(veth, port, 100, 1, wait=0.2)
    finally:
        code, out, err = finish(process, signal.SIGINT)
    received = sink.stop()
    assert code == 0, err
    table = out.splitlines()
    assert table[0].split()[:3] == ["rule", "matched", "dropped"]
    dropped = int(table[2].split()[2])
    assert [row.split()[0] for row in table[1:4]] == ["lag", "drop", "duplicate"]
    assert table[1].split()[1] == "100" and 30 < dropped < 70
    assert len(received) == 2 * (100 - dropped)


def test_conditions_command_reports_a_bad_filter(veth):
    from divertgui import cli

    process = veth.a.popen([sys.executable, "-m", "divertgui.cli", "conditions", "udp and tcp.Nope == 1", "--lag",
                            "5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = process.communicate(timeout=60)
    assert process.returncode == cli.EXIT_USAGE
    assert "tcp.Nope" in err and "\n  " + " " * 8 + "^" in err
