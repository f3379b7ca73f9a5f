"""A held HTTP request edited to another length, with a real `curl` and a real HTTP server
in two namespaces: the connection completes, because the session renumbers the rest of it,
and a retransmission of the edited segment leaves edited without being held again."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest

from divertgui.engine.packet import Packet
from divertgui.engine.store import Verdict
from tests.integration.conftest import require, wait_until
from tests.integration.test_session_rules_netns import live_session

pytestmark = pytest.mark.netns

PORT = 40481
ASKED = "/asked-for"
FILES = {"/longer-path-than-asked": b"the longer path's page\n", "/s": b"the shorter path's page\n",
         ASKED: b"the page curl asked for\n"}


class HttpServer:
    """python's http.server in namespace `ns`, serving FILES, its request log kept."""

    def __init__(self, ns, address: str, root):
        for name, body in FILES.items():
            (root / name.lstrip("/")).write_bytes(body)
        self.log = root.parent / "server.log"
        self._log_file = open(self.log, "wb")
        self.process = ns.popen([sys.executable, "-m", "http.server", str(PORT), "--bind", address,
                                 "--directory", str(root)], stdout=subprocess.DEVNULL, stderr=self._log_file)
        family = socket.AF_INET6 if ":" in address else socket.AF_INET

        def listening() -> bool:
            with ns.entered(), socket.socket(family, socket.SOCK_STREAM) as probe:
                return probe.connect_ex((address, PORT)) == 0
        assert wait_until(listening, 20), "the HTTP server did not start"

    def requests(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)
        self._log_file.close()


def url(address: str, path: str) -> str:
    return f"http://[{address}]:{PORT}{path}" if ":" in address else f"http://{address}:{PORT}{path}"


def edited_request(raw: bytes, address, path: str) -> bytes:
    """The held request with its path replaced, lengths and checksums left to the session."""
    packet = Packet(bytearray(raw), address)
    payload = packet.payload
    assert payload.startswith(f"GET {ASKED} HTTP/1.1\r\n".encode()), payload
    packet.payload = payload.replace(ASKED.encode(), path.encode(), 1)
    return packet.raw


@pytest.fixture
def http(veth, tmp_path):
    require(None if shutil.which("curl") else "curl is not installed (Debian package curl)")
    servers = []

    def start(address: str) -> HttpServer:
        root = tmp_path / f"www{len(servers)}"
        root.mkdir()
        servers.append(HttpServer(veth.b, address, root))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def curl(ns, address: str, out) -> subprocess.Popen:
    return ns.popen([shutil.which("curl"), "-sS", "--max-time", "20", "-o", str(out), url(address, ASKED)],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def hold_and_edit(veth, cgroup: str, server_address: str, path: str, tmp_path, before_forward=None):
    """curl asks for ASKED; the session holds the request, edits it to `path` and forwards it.

    Returns (curl's exit status and stderr, the body it got, the session's Running, the held row).
    """
    running = live_session(veth.a, cgroup, [], f"tcp.DstPort == {PORT} or tcp.SrcPort == {PORT}")
    try:
        running.post("set_intercept", filter=f"tcp.DstPort == {PORT} and tcp.PayloadLength > 0")
        body = tmp_path / "body"
        client = curl(veth.a, server_address, body)
        held = running.held(limit=20)
        raw, address = running.store.raw(held["row"]), running.store.address(held["row"])
        if before_forward is not None:
            before_forward(len(raw) + len(path) - len(ASKED))
        running.post("forward", ids=[held["id"]], data={str(held["id"]): edited_request(raw, address, path).hex()},
                     fix=True)
        _out, err = client.communicate(timeout=30)
        got = body.read_bytes() if body.exists() else b""
        return client.returncode, err, got, running, held["row"]
    except BaseException:
        running.stop()
        raise


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("path", ["/longer-path-than-asked", "/s"], ids=["longer", "shorter"])
def test_a_held_request_edited_to_another_length_completes(veth, http, tmp_path, ipv6, path, capture_cgroup):
    server_address = veth.b_v6 if ipv6 else veth.b_v4
    server = http(server_address)
    code, err, got, running, row = hold_and_edit(veth, capture_cgroup, server_address, path, tmp_path)
    try:
        assert code == 0, err
        assert got == FILES[path], "curl received the page of the edited path"
        assert f"GET {path} HTTP/1.1" in server.requests(), server.requests()
        assert running.store.verdict(row) == Verdict.MODIFIED
        stats = running.session.stats()
        assert stats["seq_adjusted"] > 0, stats
        assert stats["held"] == 0 and stats["resent_edited"] == 0, "nothing was retransmitted or held again"
    finally:
        running.stop()


def test_a_retransmission_of_the_edited_request_leaves_edited_and_is_not_held(veth, http, tmp_path,
                                                                              capture_cgroup):
    """The server's namespace drops the first data segment it gets (the edited request), so
    curl's TCP sends the original request again; the session sends that one edited too."""
    server = http(veth.b_v4)
    path = "/longer-path-than-asked"

    def drop_the_first(size: int) -> None:
        # A quota of one packet of this size, not two: only the first one matches.
        veth.b.exec("nft", f"add table ip dgtest; add chain ip dgtest input {{ type filter hook input priority 0; }}; "
                           f"add rule ip dgtest input tcp dport {PORT} meta length {size} "
                           f"quota {size + size // 2} bytes counter drop")

    code, err, got, running, row = hold_and_edit(veth, capture_cgroup, veth.b_v4, path, tmp_path, drop_the_first)
    try:
        assert code == 0, err
        assert got == FILES[path]
        assert server.requests().count(f"GET {path} HTTP/1.1") == 1, server.requests()
        assert ASKED not in server.requests(), "the original request never reached the server"
        dropped = veth.b.exec("nft", "list", "chain", "ip", "dgtest", "input").stdout
        assert "counter packets 1 " in dropped, dropped
        stats = running.session.stats()
        assert stats["resent_edited"] >= 1, stats
        assert stats["held"] == 0, "the retransmission was not held"
        asked = Packet(running.store.original(row)).payload
        retransmissions = [r for r in range(len(running.store)) if r != row and running.store.is_edited(r)
                           and Packet(running.store.original(r)).payload == asked]
        assert retransmissions, "the retransmission is in the list"
        for again in retransmissions:
            assert running.store.verdict(again) == Verdict.MODIFIED
            assert Packet(running.store.raw(again)).payload == Packet(running.store.raw(row)).payload
    finally:
        running.stop()
