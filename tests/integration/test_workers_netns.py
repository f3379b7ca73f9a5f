"""`--workers 2`: one handle's packets over two worker processes, in network namespaces, with real traffic."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.integration.conftest import wait_until, worker_processes
from tests.integration.test_cli_netns import finish, our_chains, start_cli

pytestmark = pytest.mark.netns

# Senders bound to many loopback addresses: netfilter's queue balancing hashes
# the addresses, so these flows spread over both workers.
FLOWS = r"""
import json, socket, sys, time
port, flows, count, pace = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
rx.bind(("127.0.0.1", port))
rx.setblocking(False)
senders = []
for k in range(flows):
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind((f"127.0.{1 + k // 200}.{1 + k % 200}", 0))
    senders.append(tx)
got = {k: [] for k in range(flows)}
def drain():
    while True:
        try:
            data = rx.recv(64)
        except BlockingIOError:
            return
        flow, seq = map(int, data.split(b":"))
        got[flow].append(seq)
for seq in range(count):
    for k, tx in enumerate(senders):
        tx.sendto(b"%d:%d" % (k, seq), ("127.0.0.1", port))
    drain()
    time.sleep(pace)
end = time.monotonic() + 3
while time.monotonic() < end:
    drain()
    time.sleep(0.05)
print(json.dumps(got))
"""


def _counters(printed: str) -> dict[str, int]:
    line = next(line for line in printed.splitlines() if line.startswith("counters:"))
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", line)}


def _queue_ids(ns) -> dict[int, int]:
    """NFQUEUE number -> id of the last packet queued to it, in this namespace."""
    rows = ns.exec("cat", "/proc/net/netfilter/nfnetlink_queue").stdout.splitlines()
    return {int(row.split()[0]): int(row.split()[7]) for row in rows if row.strip()}


def _tcp_retransmitted(ns) -> int:
    """How many TCP segments the kernel of `ns` has sent again (RetransSegs)."""
    names, values = [row.split() for row in ns.exec("cat", "/proc/net/snmp").stdout.splitlines()
                     if row.startswith("Tcp:")]
    return int(values[names.index("RetransSegs")])


def _flows_through_two_workers(netns, port: int, flows: int, count: int, pace: float, meanwhile=None):
    """FLOWS through `divert passthru --workers 2`: (exit status, what it printed, stderr,
    flow -> sequence numbers received, last packet id of each queue)."""
    process = start_cli(netns, "passthru", f"udp.DstPort == {port}", "--workers", "2")
    try:
        sending = netns.popen([sys.executable, "-c", FLOWS, str(port), str(flows), str(count), str(pace)],
                              stdout=subprocess.PIPE, text=True)
        if meanwhile is not None:
            meanwhile(process)
        out, _ = sending.communicate(timeout=120)
        queued = _queue_ids(netns)
    finally:
        code, printed, err = finish(process, signal.SIGINT)
    return code, printed, err, {int(k): v for k, v in json.loads(out).items()}, queued


def test_a_hundred_udp_flows_keep_their_order_over_two_workers(netns):
    code, printed, err, got, queued = _flows_through_two_workers(netns, 40701, 100, 40, 0.004)
    assert code == 0, err
    assert all(seqs == list(range(40)) for seqs in got.values()), \
        {k: v for k, v in got.items() if v != list(range(40))}
    assert len([n for n in queued.values() if n > 0]) == 2, f"both workers' queues carried packets: {queued}"
    counters = _counters(printed)
    assert counters["diverted"] == counters["sent"] == 4000 and counters["workers_restarted"] == 0, err
    assert our_chains(netns) == []


def test_killing_a_worker_loses_only_what_it_held_counted_and_the_others_keep_passing(netns):
    def kill_one_worker(process):
        # Mid-flood: once both workers' queues carry the flows (the sender may take a while
        # to start on a busy machine), with most of the 400 rounds still to come.
        wait_until(lambda: len([n for n in _queue_ids(netns).values() if n > 0]) == 2, 60)
        os.kill(worker_processes(process.pid)[0], signal.SIGKILL)

    code, printed, err, got, _ = _flows_through_two_workers(netns, 40703, 40, 400, 0.005, kill_one_worker)
    assert code == 0, err
    counters = _counters(printed)
    assert counters["workers_restarted"] == 1, err
    sent = 40 * 400
    received = sum(len(v) for v in got.values())
    missing = sent - received
    counted = counters["lost_with_worker"] + counters["dropped_without_worker"]
    assert 0 < missing <= counted, (missing, printed, err)
    intact = [k for k, v in got.items() if v == list(range(400))]
    hurt = [k for k, v in got.items() if v != list(range(400))]
    assert intact and hurt, "one worker's flows lost packets, the other's none"
    for k in hurt:
        # In order, and passing again once the worker was back.
        assert got[k] == sorted(got[k]) and got[k][-1] == 399, got[k]
    assert our_chains(netns) == []


SERVER = r"""
import hashlib, random, socket, sys
port, size = int(sys.argv[2]), int(sys.argv[3])
random.seed(7)
alphabet = bytes(range(0x21, 0x7e)).replace(b"~", b"")
block = bytes(random.choice(alphabet) for _ in range(65521)) + b"~"
data = (block * (size // len(block) + 1))[:size]
server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((sys.argv[1], port))
server.listen(1)
print(hashlib.sha256(data.replace(b"~", b"")).hexdigest(), len(data.replace(b"~", b"")), flush=True)
conn, _ = server.accept()
conn.sendall(data)
conn.close()
"""


def test_twenty_megabytes_of_tcp_through_a_payload_replace_rule_over_two_workers(veth, tmp_path):
    port, size = 40705, 20 * 1024 * 1024
    profile = tmp_path / "strip.json"
    profile.write_text(json.dumps({"name": "strip", "rules": [
        {"kind": "payload_replace", "filter": f"tcp.SrcPort == {port}", "direction": "outbound",
         "find": "~", "replace": ""}]}))
    server = veth.b.popen([sys.executable, "-c", SERVER, veth.b_v4, str(port), str(size)],
                          stdout=subprocess.PIPE, text=True)
    expected_hash, expected_length = server.stdout.readline().split()
    # On the sender's side, where the kernel hands the queue segments of at most the link's MTU.
    process = start_cli(veth.b, "conditions", f"tcp.SrcPort == {port} or tcp.DstPort == {port}",
                        "--profile", str(profile), "--workers", "2")
    digest, length = hashlib.sha256(), 0
    try:
        with veth.a.entered():
            client = socket.create_connection((veth.b_v4, port), timeout=30)
        while True:
            part = client.recv(1 << 16)
            if not part:
                break
            digest.update(part)
            length += len(part)
        client.close()
    finally:
        code, out, err = finish(process, signal.SIGINT)
        server.wait(30)
    assert code == 0, err
    assert length == int(expected_length) and digest.hexdigest() == expected_hash, \
        "the 20 MB arrived whole, in order, every ~ removed"
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:2]}
    # One segment per ~, each edited once; a segment TCP sent again (a worker held it past
    # the retransmission timeout on a busy machine) is edited again and counted again.
    modified, resent = int(rows["payload_replace"][4]), _tcp_retransmitted(veth.b)
    assert size // 65522 <= modified <= size // 65522 + resent, (out, resent)


def test_workers_of_a_killed_pool_remove_its_rule_and_exit(netns, tmp_path):
    # Output to a file, as to a terminal or a log: the workers outlive the pool and clean up.
    with open(tmp_path / "divert.log", "w") as log:
        process = netns.popen([sys.executable, "-m", "divertgui.cli", "passthru", "udp.DstPort == 40707",
                               "--workers", "2"], stdout=log, stderr=log)
    end = time.monotonic() + 30
    while "Ctrl+C to stop" not in (tmp_path / "divert.log").read_text() and time.monotonic() < end:
        time.sleep(0.1)
    workers = worker_processes(process.pid)
    process.kill()
    process.wait(10)
    end = time.monotonic() + 15
    while (our_chains(netns) or any(os.path.exists(f"/proc/{pid}") for pid in workers)) and time.monotonic() < end:
        time.sleep(0.2)
    assert our_chains(netns) == [], "the rule that would drop the flows' packets is gone"
    assert not any(os.path.exists(f"/proc/{pid}") for pid in workers)


def test_netdump_over_two_workers_copies_every_packet_once(netns, tmp_path):
    from divertgui.engine.pcapng import read_capture
    port, flows, count = 40705, 8, 50
    capture = tmp_path / "dump.pcapng"
    process = start_cli(netns, "netdump", f"udp.DstPort == {port}", "--workers", "2", "-w", str(capture))
    try:
        sending = netns.popen([sys.executable, "-c", FLOWS, str(port), str(flows), str(count), "0.002"],
                              stdout=subprocess.PIPE, text=True)
        out, _ = sending.communicate(timeout=120)
        queued = _queue_ids(netns)
    finally:
        code, printed, err = finish(process, signal.SIGINT)
    assert code == 0, err
    got = {int(k): v for k, v in json.loads(out).items()}
    assert all(got[k] == list(range(count)) for k in range(flows)), "sniffing lets every packet on, in order"
    assert len([n for n in queued.values() if n > 0]) == 2, f"both workers' queues carried packets: {queued}"
    sent = sorted(b"%d:%d" % (k, seq) for k in range(flows) for seq in range(count))
    copied = sorted(record.raw[28:] for record in read_capture(capture))
    assert copied == sent, "each packet copied exactly once"
    lines = printed.strip().splitlines()
    assert [int(line.split()[0]) for line in lines] == list(range(1, flows * count + 1))
    assert f"{flows * count} packets captured" in err and "lost 0 of" in err, err
    assert our_chains(netns) == []
