"""One window, three hosts reached through ssh: real sshd processes started by
the test in network namespaces of their own, `--connect ssh://root@ADDRESS:PORT`
with a key the test makes. Each host's packets arrive with its Host, and the
live self-test still passes with the three connected."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from divertgui.service.client import SSH
from tests.integration.conftest import require, run
from tests.integration.ssh_hosts import PORT, SSHD, Sshd, make_key, with_ssh_config
from tests.integration.test_cli_netns import finish, start_cli

pytestmark = pytest.mark.netns
UDP_PORT = 40400
DATAGRAMS = 5


def joined(a, b, a_address: str, b_address: str, device: str) -> None:
    """A veth pair between namespaces `a` and `b`, `device` on both sides, a /24 between them."""
    run("ip", "link", "add", "dgtmh0", "netns", a.name, "type", "veth", "peer", "name", "dgtmh1", "netns", b.name)
    for ns, old, address in ((a, "dgtmh0", a_address), (b, "dgtmh1", b_address)):
        ns.ip("link", "set", old, "name", device)
        ns.ip("addr", "add", f"{address}/24", "dev", device)
        ns.ip("link", "set", device, "up")


@pytest.fixture
def three_hosts(make_namespace, tmp_path):
    """The window's namespace, which is also the first host, and two more joined to it; sshd on each."""
    for program in (SSHD, SSH):
        require(None if os.path.exists(program) else f"{program} is not installed (packaging/system-deps.sh)")
    first, second, third = make_namespace(), make_namespace(), make_namespace()
    joined(first, second, "10.78.2.1", "10.78.2.2", "veth2")
    joined(first, third, "10.78.3.1", "10.78.3.2", "veth3")
    key = tmp_path / "id"
    make_key(key)
    servers = [Sshd(ns, address, tmp_path / f"host{number}", key)
               for number, (ns, address) in enumerate(((first, "10.78.2.1"), (second, "10.78.2.2"),
                                                        (third, "10.78.3.2")))]
    yield [first, second, third], servers
    for server in servers:
        server.stop()


def window_command(servers, tmp_path, *args: str) -> list[str]:
    return [*with_ssh_config(servers, tmp_path / "window"), sys.executable, *args]


def test_three_hosts_in_one_window_each_deliver_their_packets_with_their_host(three_hosts, tmp_path):
    namespaces, servers = three_hosts
    window = namespaces[0].popen(
        window_command(servers, tmp_path, "-m", "tests.integration.hosts_window", str(UDP_PORT),
                       *[server.target() for server in servers]),
        env={"QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(tmp_path / "config")},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = window.stdout.readline()
    if line.strip() != "ready":
        window.kill()
        pytest.fail(f"the window did not start capturing: {line} {window.stderr.read()}")
    for ns, server in zip(namespaces, servers):
        with ns.entered(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for number in range(DATAGRAMS):
                sender.sendto(f"{server.address} {number}".encode(), ("127.0.0.1", UDP_PORT))
    window.stdin.write(f"{DATAGRAMS}\n")
    window.stdin.flush()
    out, err = window.communicate(timeout=90)
    report = json.loads(out.splitlines()[-1])
    assert report["hosts"] == [server.address for server in servers], report
    assert report["host_column_shown"] and report["errors"] == [], report
    rows = report["rows"]
    assert sorted(payload for _, payload in rows) == sorted(
        f"{server.address} {number}" for server in servers for number in range(DATAGRAMS)), (rows, err)
    assert all(payload.split()[0] == host for host, payload in rows), rows
    for server in servers:     # each host's datagrams in the order they were sent
        mine = [payload for host, payload in rows if host == server.address]
        assert mine == [f"{server.address} {number}" for number in range(DATAGRAMS)]


def live_self_test(namespaces, servers, tmp_path) -> str:
    """`divertgui --self-test --live` connected to every host, in the first host's namespace; its summary."""
    connect = [arg for server in servers for arg in ("--connect", server.target())]
    window = namespaces[0].popen(
        window_command(servers, tmp_path, "-m", "divertgui.app", "--self-test", "--live", *connect),
        env={"QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(tmp_path / "config")},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = window.communicate(timeout=120)
    assert window.returncode == 0, out + err
    return out.strip().splitlines()[-1]


def test_the_live_self_test_passes_with_three_hosts_connected(three_hosts, tmp_path):
    summary = live_self_test(*three_hosts, tmp_path)
    assert summary.startswith("live self-test passed: "), summary


def test_the_live_self_test_waits_for_its_own_host_when_the_others_answer_first(three_hosts, tmp_path):
    # The commands to the first host, whose namespace the self-test's traffic is in, arrive
    # 400 ms late (a lag rule on its ssh connection); the other two hosts answer at once.
    namespaces, servers = three_hosts
    lag = start_cli(namespaces[0], "conditions", f"tcp.DstPort == {PORT} and ip.DstAddr == {servers[0].address}",
                    "--lag", "400", "--direction", "out")
    try:
        summary = live_self_test(namespaces, servers, tmp_path)
    finally:
        code, _printed, err = finish(lag, signal.SIGINT)
    assert code == 0, err
    assert summary.startswith("live self-test passed: "), summary
