"""kill -9 of a diverting process never black-holes the network, and what it left is swept."""

import os
import signal
import subprocess
import sys

import pytest

from divertgui.engine.backends import netfilter_rules
from divertgui.engine.handle import Divert
from tests.integration.conftest import our_chains, receive_all, receive_expected, udp_socket

pytestmark = pytest.mark.netns

PORT = 40041

# Opens a handle and never reads it: while it lives, matching packets wait in its queue.
HOLDER = """
import time
from divertgui.engine.handle import Divert
handle = Divert("udp.DstPort == %d").open()
print("open", flush=True)
time.sleep(60)
""" % PORT


def _start_holder(ns):
    process = ns.popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    assert line.strip() == "open", process.stderr.read() if process.poll() is not None else line
    return process


def _pids_with_chains():
    return {chain.pid for chain in netfilter_rules.list_handles()}


def test_kill_9_keeps_traffic_flowing_and_cleanup_removes_the_leftovers(netns):
    process = _start_holder(netns)
    with netns.entered():
        server = udp_socket("127.0.0.1", PORT)
        client = udp_socket("127.0.0.1")
        client.sendto(b"held", ("127.0.0.1", PORT))
        # Sanity check: while the holder lives, its queue holds the packet.
        assert receive_all(server, 0.3) == []
        holder_pid = next(iter(_pids_with_chains()))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        assert holder_pid in _pids_with_chains()        # left behind by the dead process
        client.sendto(b"after the crash", ("127.0.0.1", PORT))
        assert receive_expected(server, 1) == [b"after the crash"]
        removed = netfilter_rules.cleanup()
        assert {chain.pid for chain in removed} == {holder_pid}
        assert netfilter_rules.list_handles() == []
    assert our_chains(netns) == []


def test_the_next_handle_sweeps_what_a_dead_process_left(netns):
    process = _start_holder(netns)
    with netns.entered():
        dead_pid = next(iter(_pids_with_chains()))
        process.kill()
        process.wait(timeout=10)
        assert _pids_with_chains() == {dead_pid}
        with Divert("false"):
            assert _pids_with_chains() == {os.getpid()}
        assert _pids_with_chains() == set()


def test_sigterm_removes_the_rules(netns):
    process = _start_holder(netns)
    with netns.entered():
        assert _pids_with_chains()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
        assert process.returncode == -signal.SIGTERM
        assert netfilter_rules.list_handles() == []
