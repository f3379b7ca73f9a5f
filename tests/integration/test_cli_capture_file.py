"""`divert netdump -w FILE`: the file is checked before anything is diverted, and every write error names it."""

from __future__ import annotations

import os
import shutil
import signal

import pytest

from tests.integration.conftest import udp_socket
from tests.integration.test_cli_netns import cli, finish, our_chains, start_cli

pytestmark = pytest.mark.netns

PORT = 40361
FILE_LIMIT = 2048


@pytest.mark.parametrize("target, reason", [("/dev/full", "No space left on device"),
                                            ("{tmp}/no/such/dir/x.pcapng", "No such file or directory"),
                                            ("{tmp}", "Is a directory")])
def test_a_file_that_cannot_be_written_is_refused_at_start(netns, tmp_path, target, reason):
    path = target.format(tmp=tmp_path)
    done = cli(netns, "netdump", f"udp.DstPort == {PORT}", "-w", path)
    assert done.returncode == 1
    assert done.stderr == f"divert: cannot write {path}: {reason}\n"
    assert our_chains(netns) == []


def _prlimit() -> str:
    path = shutil.which("prlimit")
    if path is None:
        reason = "prlimit (util-linux) is needed to limit the file size"
        if os.environ.get("CI") == "true":
            pytest.fail(f"missing prerequisite in CI: {reason}")
        pytest.skip(reason)
    return path


def test_a_write_error_during_the_capture_names_the_file_and_stops(netns, tmp_path):
    capture = tmp_path / "small.pcapng"
    # Files limited to 2 kB: past that a write fails with EFBIG (Python ignores SIGXFSZ).
    process = start_cli(netns, "netdump", f"udp.DstPort == {PORT}", "-w", str(capture),
                        wrapper=(_prlimit(), f"--fsize={FILE_LIMIT}"))
    try:
        with netns.entered():
            server, client = udp_socket("127.0.0.1", PORT), udp_socket("127.0.0.1")
            for i in range(40):
                client.sendto(b"%03d" % i + b"." * 200, ("127.0.0.1", PORT))
        process.wait(timeout=30)
    finally:
        code, out, err = finish(process, signal.SIGINT)
    assert code == 1, err
    assert err.rstrip("\n").endswith(f"divert: cannot write {capture}: File too large"), err
    assert f"{capture} holds those written before the error below" in err
    assert capture.stat().st_size <= FILE_LIMIT
    assert our_chains(netns) == []
