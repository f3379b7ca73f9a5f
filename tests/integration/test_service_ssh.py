"""A window captures on another host through ssh: a real sshd, started by the
test in a namespace with keys the test makes, runs `divert serve` there."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from divertgui.engine.store import CaptureStore
from divertgui.service.client import SSH, ServiceClient
from tests.integration.conftest import require, wait_until
from tests.integration.ssh_hosts import SSHD, Sshd

pytestmark = pytest.mark.netns
ECHO_PORT = 40321


@pytest.fixture
def sshd(veth, tmp_path):
    for program in (SSHD, SSH):
        require(None if os.path.exists(program) else f"{program} is not installed (packaging/system-deps.sh)")
    server = Sshd(veth.b, veth.b_v4, tmp_path)
    yield server
    server.stop()


def echo_server(ns, address: str, port: int) -> socket.socket:
    with ns.entered():
        listener = socket.create_server((address, port))

    def serve():
        connection, _ = listener.accept()
        with connection:
            while data := connection.recv(4096):
                connection.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    return listener


REMOTE_COMMAND = f"{os.path.join(os.path.dirname(sys.executable), 'divert')} serve"


def test_a_window_captures_holds_edits_and_forwards_on_a_host_reached_through_ssh(veth, sshd):
    listener = echo_server(veth.b, veth.b_v4, ECHO_PORT)
    options = {"remote_command": REMOTE_COMMAND, "ssh_options": sshd.options}
    window = veth.a.popen([sys.executable, "-m", "tests.integration.service_scenarios", "capture", sshd.target(),
                           "0", str(ECHO_PORT), veth.b_v4],
                          env={"SCENARIO_CLIENT_OPTIONS": json.dumps(options)},
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = window.communicate(timeout=90)
    listener.close()
    assert window.returncode == 0, err
    report = json.loads(out.splitlines()[-1])
    assert report["hello"]["live"] == "" and report["hello"]["host"] == socket.gethostname()
    assert report["state"]["running"] and report["state"]["source"] == "live", report
    assert report["held_payload"] == "original payload!"
    assert report["received"] == "EDITED payload!!!"
    assert report["verdict"] == "MODIFIED"
    assert report["errors"] == []


def test_sshs_own_words_say_why_a_host_cannot_be_reached(veth, sshd):
    events = []
    wrong_key = sshd.directory / "host_key"     # a key the server does not accept
    options = [o if o != str(sshd.directory / "id") else str(wrong_key) for o in sshd.options]
    with veth.a.entered():
        client = ServiceClient(sshd.target(), CaptureStore(), events.append, remote_command=REMOTE_COMMAND,
                               ssh_options=options)
        client.start()
        assert wait_until(lambda: events, 30)
    client.close()
    assert events[-1]["where"] == "connection"
    assert events[-1]["message"].startswith(f"{veth.b_v4}: the service closed the connection: ")
    assert "Permission denied (publickey)" in events[-1]["message"]
