"""Divert.pass_batch releases what it diverts unchanged, counting it, on every backend."""

import threading

import pytest

from divertgui.engine.handle import Divert
from tests.integration.conftest import receive_expected, udp_socket

pytestmark = pytest.mark.netns

PORT, OTHER_PORT = 40031, 40032


class Passer:
    """Calls pass_batch on a thread until stopped; sums what it passed."""

    def __init__(self, handle):
        self.handle, self.passed, self.errors = handle, 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            while not self._stop.is_set():
                self.passed += self.handle.pass_batch(64, 0.05)
        except Exception as exc:  # reported by the test
            self.errors.append(exc)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_every_matching_packet_arrives_and_is_counted(netns, backend, host):
    # ifIdx is decided in user space, so the other port's packets reach user
    # space too and are released there as rejected.
    text = f"udp.DstPort == {PORT} or ifIdx == 999"
    with netns.entered():
        server, other = udp_socket(host, PORT), udp_socket(host, OTHER_PORT)
        with Divert(text, backend=backend()) as handle, Passer(handle) as passer:
            client = udp_socket(host)
            for i in range(150):
                client.sendto(b"to %d" % i, (host, PORT))
                client.sendto(b"other %d" % i, (host, OTHER_PORT))
            got = receive_expected(server, 150)
            got_other = receive_expected(other, 150)
        stats = handle.stats()
    assert not passer.errors
    assert sorted(got) == sorted(b"to %d" % i for i in range(150))
    assert sorted(got_other) == sorted(b"other %d" % i for i in range(150))
    assert passer.passed == stats["diverted"] == 150
    assert stats.get("rejected", 150) == 150


def test_two_priorities_each_pass_every_packet_once(netns, backend):
    with netns.entered():
        server = udp_socket("127.0.0.1", PORT)
        with Divert(f"udp.DstPort == {PORT}", priority=100, backend=backend()) as high, \
                Divert(f"udp.DstPort == {PORT}", priority=-5, backend=backend()) as low, \
                Passer(high) as high_passer, Passer(low) as low_passer:
            client = udp_socket("127.0.0.1")
            for i in range(200):
                client.sendto(b"packet %d" % i, ("127.0.0.1", PORT))
            got = receive_expected(server, 200)
    assert not high_passer.errors and not low_passer.errors
    assert sorted(got) == sorted(b"packet %d" % i for i in range(200))
    assert high_passer.passed == low_passer.passed == 200
