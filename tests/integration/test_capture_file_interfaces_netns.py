"""A window saving a live capture names each interface as the capturing service's network
namespace does, not as the window's: here the service runs in a namespace of its own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from divertgui.engine.saved_capture import save_rows
from divertgui.engine.store import CaptureStore
from divertgui.service.client import ServiceClient
from tests.integration.conftest import wait_until
from tests.integration.test_service_netns import socket_directory  # noqa: F401
from tests.unit.test_capture_file_origins import directions, interface_names

pytestmark = pytest.mark.netns

PINGS = 3


def test_a_saved_live_capture_names_the_services_interfaces(veth, socket_directory, tmp_path):  # noqa: F811
    path = os.path.join(socket_directory, "divert.sock")
    service = veth.a.popen([sys.executable, "-m", "divertgui.cli", "serve", "--listen", path],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    store, events = CaptureStore(), []
    client = None
    try:
        assert wait_until(lambda: os.path.exists(path) or service.poll() is not None, 20), "no socket"
        client = ServiceClient(f"unix:{path}", store, events.append)
        client.start()
        assert wait_until(lambda: client.hello is not None, 10)
        client.post("start", source="live", mode="sniff", filter="icmp")
        assert wait_until(lambda: any(e["type"] == "state" and e["running"] for e in events), 20), events
        veth.a.exec("ping", "-c", str(PINGS), "-i", "0.2", "-W", "5", veth.b_v4)
        assert wait_until(lambda: len(store) >= 2 * PINGS, 10), events
        client.post("stop")
    finally:
        if client is not None:
            client.close()
        service.terminate()
        service.wait(10)
    saved = tmp_path / "live.pcapng"
    save_rows(store, saved, range(len(store)))
    assert interface_names(saved) == [veth.device] * len(store)
    assert sorted(directions(saved)) == ["in"] * PINGS + ["out"] * PINGS
    # The window's own namespace gives that index another name, or none.
    index = veth.a.ifindex(veth.device)
    try:
        here = socket.if_indextoname(index)
    except OSError:
        here = None
    assert here != veth.device
