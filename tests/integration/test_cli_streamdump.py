"""`divert streamdump`, WinDivert's streamdump sample, on a real curl request:
"The program works by "reflecting" outbound TCP connections into inbound TCP
connections that are handled by a simple proxy server." """

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.integration.conftest import require, wait_until
from tests.integration.test_cli_netns import finish, our_chains, start_cli

pytestmark = pytest.mark.netns

PORT = 40311


def _curl(ns, url: str):
    return ns.exec("curl", "-sS", "--max-time", "5", "-o", "-", url, check=False)


@pytest.mark.parametrize("family", ["v4", "v6"])
def test_a_stream_through_the_proxy_is_printed_and_arrives_whole(veth, tmp_path, family):
    require(None if shutil.which("curl") else "curl is not installed (Debian package curl)")
    served = tmp_path / "page.txt"
    served.write_text("streamed through the proxy\n" * 100)
    host = veth.b_v4 if family == "v4" else f"[{veth.b_v6}]"
    veth.b.popen([sys.executable, "-m", "http.server", str(PORT), "--bind", "::", "--directory", str(tmp_path)],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_until(lambda: _curl(veth.b, f"http://[{veth.b_v6}]:{PORT}/page.txt").returncode == 0, 10)
    process = start_cli(veth.a, "streamdump", str(PORT))
    try:
        got = _curl(veth.a, f"http://{host}:{PORT}/page.txt")
        # The connection the server saw came from the proxy's relay, through the alternate port.
        listening = veth.a.exec("ss", "-Htln", "sport = :34010").stdout
    finally:
        code, out, err = finish(process)
    assert code == 0, err
    assert got.returncode == 0, got.stderr
    assert got.stdout == served.read_text()
    assert listening.strip()
    lines = out.splitlines()
    assert any(line.startswith("[") and "] > GET /page.txt HTTP/1.1" in line for line in lines), out
    assert any("] < HTTP/1.0 200 OK" in line for line in lines), out
    assert our_chains(veth.a) == []
