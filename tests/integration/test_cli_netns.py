"""The `divert` CLI run as a real process inside network namespaces, on real traffic."""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.integration.conftest import REPO, our_chains, receive_all, udp_socket

pytestmark = pytest.mark.netns

PORT = 40201
READY = "Ctrl+C to stop"


def start_cli(ns, *args: str, wrapper: tuple[str, ...] = ()) -> subprocess.Popen:
    """`python -m divertgui.cli ARGS` inside `ns` (run by `wrapper`, if any), returned once its handle is open."""
    process = ns.popen([*wrapper, sys.executable, "-m", "divertgui.cli", *args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    seen = ""
    end = time.monotonic() + 20
    while READY not in seen and time.monotonic() < end and process.poll() is None:
        ready, _, _ = select.select([process.stderr], [], [], 0.5)
        if ready:
            seen += process.stderr.readline()
    if READY not in seen:
        process.kill()
        out, err = process.communicate(timeout=10)
        pytest.fail(f"divert {' '.join(args)} did not start: {seen}{err}")
    return process


def finish(process: subprocess.Popen, signum=signal.SIGTERM, timeout: float = 30) -> tuple[int, str, str]:
    """Stop `process` with one `signum` and wait for it to exit; (exit code, stdout, stderr).

    Never a second signal: one arriving while the process is already shutting down would
    kill it with that signal. A process still running `timeout` seconds after the signal is
    killed and the test fails, since divert must exit on its own after SIGTERM or SIGINT.
    """
    if process.poll() is None:
        process.send_signal(signum)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate(timeout=10)
        pytest.fail(f"divert still ran {timeout} s after {signal.Signals(signum).name}; killed it. "
                    f"stdout: {out!r} stderr: {err!r}")
    return process.returncode, out, err


def cli(ns, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run(["ip", "netns", "exec", ns.name, sys.executable, "-m", "divertgui.cli", *args],
                          capture_output=True, text=True, timeout=60, env=env)


def _require_tshark():
    if shutil.which("tshark") is None:
        reason = "tshark is not installed (Debian package tshark)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"missing prerequisite in CI: {reason}")
        pytest.skip(reason)


def test_netdump_prints_real_packets_and_writes_a_pcapng_tshark_reads(netns, tmp_path):
    _require_tshark()
    capture = tmp_path / "dump.pcapng"
    process = start_cli(netns, "netdump", f"udp.DstPort == {PORT}", "-w", str(capture), "-c", "3")
    with netns.entered():
        server = udp_socket("127.0.0.1", PORT)
        client = udp_socket("127.0.0.1")
        for i in range(3):
            client.sendto(b"dump me %d" % i, ("127.0.0.1", PORT))
            client.sendto(b"not me", ("127.0.0.1", PORT + 1))
        got = receive_all(server, 0.5)
    process.wait(timeout=20)
    code, out, err = finish(process)
    assert code == 0, err
    assert len(got) == 3  # sniffing never takes a packet out of the stack
    lines = out.strip().splitlines()
    assert len(lines) == 3, out
    for line in lines:
        assert "outbound" in line and "loopback" in line and "IPv4 127.0.0.1 > 127.0.0.1" in line
        assert f"> {PORT} payload=9" in line
    assert our_chains(netns) == []
    shown = subprocess.run(["tshark", "-r", str(capture), "-T", "fields", "-e", "udp.dstport", "-e", "data"],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    rows = [row.split("\t") for row in shown.stdout.strip().splitlines()]
    assert [r[0] for r in rows] == [str(PORT)] * 3
    assert [bytes.fromhex(r[1]) for r in rows] == [b"dump me 0", b"dump me 1", b"dump me 2"]


def test_netdump_verbose_prints_the_netdump_block(netns):
    process = start_cli(netns, "netdump", "icmp", "-v", "-c", "1")
    with netns.entered():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.sendto(b"x", ("127.0.0.1", 9))  # answered by ICMP port unreachable
    process.wait(timeout=20)
    code, out, err = finish(process)
    assert code == 0, err
    assert "IPv4 [Version=4 HdrLength=5" in out and "ICMP [Type=3 Code=3" in out and "Loopback=1" in out, out


@pytest.mark.parametrize("version", [4, 6])
def test_netfilter_refuses_tcp_with_rst_and_udp_with_icmp_unreachable(veth, version):
    a_addr, b_addr = (veth.a_v4, veth.b_v4) if version == 4 else (veth.a_v6, veth.b_v6)
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    with veth.b.entered():
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.bind((b_addr, PORT))
        listener.listen(1)
        udp_server = udp_socket(b_addr, PORT)
    process = start_cli(veth.b, "netfilter", f"inbound and (tcp.DstPort == {PORT} or udp.DstPort == {PORT})")
    try:
        with veth.a.entered():
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((b_addr, PORT), timeout=5)
            client = socket.socket(family, socket.SOCK_DGRAM)
            client.settimeout(5)
            client.connect((b_addr, PORT))
            client.send(b"knock")
            with pytest.raises(ConnectionRefusedError):
                client.recv(100)
    finally:
        code, out, err = finish(process)
    assert code == 0, err
    assert "answered with RST" in out and "answered with ICMP unreachable" in out, out
    assert receive_all(udp_server, 0.2) == []
    assert our_chains(veth.b) == []


def test_passthru_lets_an_exchange_complete_and_prints_counters(veth):
    with veth.b.entered():
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((veth.b_v4, PORT))
        listener.listen(1)
        listener.settimeout(5)
    process = start_cli(veth.b, "passthru", f"tcp.DstPort == {PORT} or tcp.SrcPort == {PORT}", "--batch", "16",
                        "--threads", "2")
    try:
        with veth.a.entered():
            client = socket.create_connection((veth.b_v4, PORT), timeout=5)
        conn, _ = listener.accept()
        conn.settimeout(5)
        client.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert conn.recv(100) == b"GET / HTTP/1.0\r\n\r\n"
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nhello")
        conn.close()
        reply = b""
        while chunk := client.recv(100):
            reply += chunk
        client.close()
    finally:
        code, out, err = finish(process)
    assert reply == b"HTTP/1.0 200 OK\r\n\r\nhello"
    assert code == 0, err
    counters = dict(item.split("=") for item in out.split("counters: ")[1].split())
    assert int(counters["diverted"]) >= 6 and counters["diverted"] == counters["sent"], out
    assert counters["dropped"] == "0" and counters["overflowed"] == "0"
    assert our_chains(veth.b) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_remove_the_rules(netns, signum):
    process = start_cli(netns, "passthru", "udp")
    assert our_chains(netns) != []
    code, out, err = finish(process, signum)
    assert code == 0, err
    assert "passthru:" in out
    assert our_chains(netns) == []


def test_cleanup_removes_rules_left_by_a_killed_process(netns):
    process = start_cli(netns, "passthru", f"udp.DstPort == {PORT}")
    process.kill()
    process.wait(timeout=10)
    left = cli(netns, "list")
    assert left.returncode == 0 and "dead" in left.stdout, left.stdout + left.stderr
    with netns.entered():  # the dead handle's rules fail open: traffic still flows
        server = udp_socket("127.0.0.1", PORT)
        udp_socket("127.0.0.1").sendto(b"still flowing", ("127.0.0.1", PORT))
        assert server.recv(100) == b"still flowing"
    done = cli(netns, "cleanup")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("removed") and str(process.pid) in done.stdout, done.stdout
    assert our_chains(netns) == []
    assert "no divertgui handles" in cli(netns, "list").stdout
