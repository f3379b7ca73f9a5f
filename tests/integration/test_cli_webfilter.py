"""`divert webfilter`, WinDivert's webfilter sample, on real curl requests:
"If the URL is matched, we hijack the TCP connection, reseting the connection
at the server end, and sending a blockpage to the browser."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.integration.conftest import require, wait_until
from tests.integration.test_cli_netns import finish, our_chains, start_cli

pytestmark = pytest.mark.netns

PORT = 40301


def _curl(ns, url: str):
    return ns.exec("curl", "-sS", "--max-time", "5", "-o", "-", "-w", "\n%{http_code}", url, check=False)


@pytest.fixture
def web_server(veth):
    require(None if shutil.which("curl") else "curl is not installed (Debian package curl)")
    veth.b.popen([sys.executable, "-m", "http.server", str(PORT), "--bind", "::"],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_until(lambda: _curl(veth.b, f"http://[{veth.b_v6}]:{PORT}/").returncode == 0, 10)
    return veth


@pytest.mark.parametrize("reset", [False, True])
def test_listed_urls_get_the_block_page_or_a_reset_and_others_pass(web_server, tmp_path, reset):
    veth = web_server
    blocklist = tmp_path / "blocklist.txt"
    blocklist.write_text(f"# hosts and URL prefixes\n{veth.b_v4}/private\n")
    args = ["webfilter", str(blocklist), "--block", "blocked.example", "--block", f"[{veth.b_v6}]/v6only",
            "--port", str(PORT)]
    process = start_cli(veth.a, *args, *(["--reset"] if reset else []))
    try:
        allowed = _curl(veth.a, f"http://{veth.b_v4}:{PORT}/")
        prefix = _curl(veth.a, f"http://{veth.b_v4}:{PORT}/private/file")
        by_host = veth.a.exec("curl", "-sS", "--max-time", "5", "-o", "-", "-w", "\n%{http_code}",
                              "-H", "Host: www.blocked.example", f"http://[{veth.b_v6}]:{PORT}/", check=False)
        by_address = _curl(veth.a, f"http://[{veth.b_v6}]:{PORT}/v6only/file")
    finally:
        code, out, err = finish(process)
    assert code == 0, err
    assert allowed.returncode == 0 and allowed.stdout.endswith("\n200")
    for blocked in (prefix, by_host, by_address):
        if reset:
            assert blocked.returncode != 0 and "reset" in blocked.stderr.lower(), blocked
        else:
            assert blocked.returncode == 0 and blocked.stdout.endswith("\n403"), blocked
            assert "<h1>BLOCKED!</h1>" in blocked.stdout
    assert f"BLOCK http://{veth.b_v4}/private/file" in out
    assert "BLOCK http://www.blocked.example/" in out
    assert f"BLOCK http://[{veth.b_v6}]/v6only/file" in out
    assert "blocked 3 requests" in err
    assert our_chains(veth.a) == []


def test_a_bad_blocklist_entry_is_refused_saying_where(netns, tmp_path):
    from tests.integration.test_cli_netns import cli
    blocklist = tmp_path / "bad.txt"
    blocklist.write_text("fine.example\n\nnot a host\n")
    done = cli(netns, "webfilter", str(blocklist))
    assert done.returncode == 2
    assert f"{blocklist}:3: 'not a host' is not a host or host/path" in done.stderr
