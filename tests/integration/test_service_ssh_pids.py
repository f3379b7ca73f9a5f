"""Two hosts, each a network and pid namespace of its own reached through a
real sshd, each running a process of the same pid: the window's Processes
view lists them apart, and holding the second host's from that view holds
that host's packets alone."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest

from divertgui.service.client import SSH
from tests.integration.conftest import require
from tests.integration.ssh_hosts import SSHD, Sshd, make_key, with_ssh_config
from tests.integration.test_service_ssh_hosts import joined

pytestmark = pytest.mark.netns
UDP_PORT = 40410
ROUNDS = 20          # datagrams sent from each host, at most, before the hold has reached its service
# sshd as the first process of a pid namespace with its own /proc: the service it starts
# names processes by their pids in that namespace.
PID_NAMESPACE = ("unshare", "--pid", "--fork", "--mount-proc", "--kill-child")
SENDER = ("import os, socket, sys\n"
          "print(os.getpid(), flush=True)\n"
          "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
          "for line in sys.stdin:\n"
          f"    s.sendto(line.strip().encode(), ('127.0.0.1', {UDP_PORT}))\n")


def sender_beside(server: Sshd) -> tuple[subprocess.Popen, int]:
    """A program that sends a datagram per input line, in `server`'s namespaces; its pid there."""
    children = pathlib.Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
    # Without capabilities: the service, which keeps only its capture ones, may read the /proc of
    # a process only when that process has no capability the service lacks.
    program = subprocess.Popen(["nsenter", "-t", children[0], "-p", "-m", "-n", "setpriv", "--bounding-set", "-all",
                                sys.executable, "-u", "-c", SENDER],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return program, int(program.stdout.readline())


def test_a_pid_on_two_hosts_is_two_processes_and_holding_one_holds_its_host_alone(make_namespace, tmp_path):
    for program in (SSHD, SSH):
        require(None if os.path.exists(program) else f"{program} is not installed (packaging/system-deps.sh)")
    first, second = make_namespace(), make_namespace()
    joined(first, second, "10.78.4.1", "10.78.4.2", "veth4")
    key = tmp_path / "id"
    make_key(key)
    servers = [Sshd(ns, address, tmp_path / f"host{n}", key, prefix=PID_NAMESPACE)
               for n, (ns, address) in enumerate(((first, "10.78.4.1"), (second, "10.78.4.2")))]
    senders = []
    receivers = []
    try:
        senders = [sender_beside(server) for server in servers]
        assert senders[0][1] == senders[1][1], "the two senders should share a pid, each in its namespace"
        for ns in (first, second):
            with ns.entered():
                receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                receiver.bind(("127.0.0.1", UDP_PORT))
                receivers.append(receiver)
        window = first.popen(
            [*with_ssh_config(servers, tmp_path / "window"), sys.executable, "-m",
             "tests.integration.process_hold_window", str(UDP_PORT), *[server.target() for server in servers]],
            env={"QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(tmp_path / "config")},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def read_line() -> str:
            line = window.stdout.readline()
            if not line:
                window.kill()
                pytest.fail(f"the window ended: {window.stderr.read()}")
            return line

        def send_round(text: str) -> None:
            for program, _ in senders:
                program.stdin.write(f"{text}\n")
                program.stdin.flush()
            window.stdin.write("sent\n")
            window.stdin.flush()

        assert read_line().strip() == "ready"
        send_round("before")
        listed = json.loads(read_line())
        processes = listed["processes"]
        pid = senders[0][1]
        names = [server.address for server in servers]
        assert sorted((host, listed) for host, listed, _ in processes) == [(name, pid) for name in names], listed
        assert read_line().strip() == "holding"
        for _ in range(ROUNDS):
            send_round("after")
            if read_line().strip() == "held":
                break
        else:
            pytest.fail(f"no packet of the second host was held in {ROUNDS} rounds")
        report = json.loads(read_line())
        out, err = window.communicate(timeout=60)
        assert report.get("errors") == [], (report, err)
        by_host = {name: [verdict for host, verdict in report["rows"] if host == name] for name in names}
        rounds = len(by_host[names[0]])
        assert by_host[names[0]] == ["PASSED"] * rounds, report
        assert by_host[names[1]][-1] == "HELD" and by_host[names[1]][0] == "PASSED" and len(by_host[names[1]]) == rounds
    finally:
        for program, _ in senders:
            program.stdin.close()
        for receiver in receivers:
            receiver.close()
        for server in servers:
            # Killed, unshare kills the namespace's first process, and with it every other.
            server.process.kill()
            server.process.wait(10)
