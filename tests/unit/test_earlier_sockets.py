"""A flow's process found from its socket (sock_diag by 5-tuple and cookie, then /proc), as the
FLOW layer does for sockets created before its handle opened."""

import os
import socket

from divertgui.engine.address import EndpointData
from divertgui.engine.earlier_sockets import EarlierSockets
from divertgui.engine.header_fields import IPPROTO_UDP

SO_COOKIE = 57
MAPPED = 0xFFFF_0000_0000


def _flow(sock: socket.socket, cookie: int) -> EndpointData:
    (local, lport), (remote, rport) = sock.getsockname(), sock.getpeername()
    as_number = lambda text: MAPPED | int.from_bytes(socket.inet_aton(text), "big")  # noqa: E731
    return EndpointData(endpoint_id=cookie, local_addr=as_number(local), local_port=lport,
                        remote_addr=as_number(remote), remote_port=rport, protocol=IPPROTO_UDP)


def test_a_socket_that_exists_gives_its_process_and_another_cookie_gives_none():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.connect(("127.0.0.1", 9))          # no datagram is sent
        cookie = int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8), "little")
        earlier = EarlierSockets()
        try:
            found, stranger = _flow(sock, cookie), _flow(sock, cookie + 1)
            earlier.fill(found)
            earlier.fill(stranger)
        finally:
            earlier.close()
    with open(f"/proc/{os.getpid()}/comm") as comm:
        name = comm.read().strip()
    assert (found.process_id, found.process_name) == (os.getpid(), name)
    assert (stranger.process_id, stranger.process_name) == (0, "")
    assert not earlier.error
