"""An HTTP exchange between a real server and client completes through a passthru handle."""

import http.server
import socket
import threading
import urllib.request

import pytest

from divertgui.engine.handle import Divert
from tests.integration.conftest import Passthru

pytestmark = pytest.mark.netns

PORT = 40031
BODY = b"divertgui says hello\n" * 200   # several segments each way


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        request = self.rfile.read(int(self.headers["Content-Length"]))
        reply = BODY + request
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    def __init__(self, address, family):
        self.address_family = family
        super().__init__(address, _Handler)


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("diverting_side", ["client", "server"])
def test_http_through_passthru(veth, backend, version, diverting_side):
    a_addr, b_addr = (veth.a_v4, veth.b_v4) if version == 4 else (veth.a_v6, veth.b_v6)
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    # The handle lives in `b`; b is the client in one case and the server in the other.
    server_ns, server_addr = (veth.a, a_addr) if diverting_side == "client" else (veth.b, b_addr)
    client_ns = veth.b if diverting_side == "client" else veth.a
    with server_ns.entered():
        server = _Server((server_addr, PORT), family)
        serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        serving.start()
    try:
        with veth.b.entered(), \
                Divert(f"tcp and remotePort == {PORT} or tcp and localPort == {PORT}", backend=backend()) as handle, \
                Passthru(handle) as passthru:
            with client_ns.entered():
                host = server_addr if version == 4 else f"[{server_addr}]"
                request = urllib.request.Request(f"http://{host}:{PORT}/", data=b"ping" * 1000, method="POST")
                with urllib.request.urlopen(request, timeout=5) as response:
                    status, body = response.status, response.read()
            passthru.stop()
    finally:
        server.shutdown()
        server.server_close()
    assert not passthru.errors
    assert status == 200 and body == BODY + b"ping" * 1000
    directions = [a.outbound for _, a in passthru.records]
    assert directions.count(True) >= 3 and directions.count(False) >= 3
    assert all(a.ipv6 == (version == 6) for _, a in passthru.records)
