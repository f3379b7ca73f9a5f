"""The handle's own rules: arguments, parameters, shutdown, SEND_ONLY."""

import pytest

from divertgui.engine.address import Flag, Param
from divertgui.engine.errors import DivertArgumentError, DivertError, HandleClosedError
from divertgui.engine.handle import Divert
from divertgui.engine.packet import Packet
from tests.integration.conftest import receive_all, receive_expected, udp_socket

PORT = 40071


@pytest.mark.parametrize("flags", [Flag.SNIFF | Flag.DROP, Flag.RECV_ONLY | Flag.SEND_ONLY])
def test_contradictory_flags_are_refused(flags):
    with pytest.raises(DivertArgumentError, match="cannot be combined"):
        Divert("true", flags=flags)


@pytest.mark.parametrize("priority", [-30001, 30001, 1.5])
def test_priority_outside_the_range_is_refused(priority):
    with pytest.raises(DivertArgumentError, match="priority"):
        Divert("true", priority=priority)


def test_parameters_keep_to_their_limits():
    handle = Divert("true")
    assert handle.get_param(Param.QUEUE_LENGTH) == 4096
    assert handle.get_param(Param.QUEUE_TIME) == 2000
    assert (handle.get_param(Param.VERSION_MAJOR), handle.get_param(Param.VERSION_MINOR)) == (2, 2)
    handle.set_param(Param.QUEUE_TIME, 100)
    assert handle.get_param(Param.QUEUE_TIME) == 100
    for param, value in ((Param.QUEUE_LENGTH, 31), (Param.QUEUE_TIME, 16001), (Param.QUEUE_SIZE, 1024)):
        with pytest.raises(DivertArgumentError, match=param.name):
            handle.set_param(param, value)
    with pytest.raises(DivertArgumentError, match="read-only"):
        handle.set_param(Param.VERSION_MAJOR, 3)


def test_a_handle_that_is_not_open_says_so():
    with pytest.raises(HandleClosedError, match="not open"):
        Divert("true").recv(timeout=0)


@pytest.mark.netns
def test_shutdown_recv_keeps_what_was_queued_and_diverts_nothing_new(netns, backend):
    with netns.entered():
        server = udp_socket("127.0.0.1", PORT)
        client = udp_socket("127.0.0.1")
        with Divert(f"udp.DstPort == {PORT}", backend=backend()) as handle:
            client.sendto(b"queued", ("127.0.0.1", PORT))
            assert receive_all(server, 0.2) == []
            handle.shutdown("recv")
            client.sendto(b"after shutdown", ("127.0.0.1", PORT))
            assert receive_expected(server, 1) == [b"after shutdown"]
            queued = handle.recv(timeout=1)
            assert queued.payload == b"queued"
            handle.send(queued)
            assert receive_expected(server, 1) == [b"queued"]
            with pytest.raises(HandleClosedError, match="shut down"):
                handle.recv(timeout=0.2)
            handle.shutdown("send")
            with pytest.raises(HandleClosedError):
                handle.send(Packet(queued.raw, queued.address))


@pytest.mark.netns
def test_send_only_injects_and_cannot_receive(netns, backend):
    with netns.entered():
        server = udp_socket("127.0.0.1", PORT)
        with Divert(f"udp.DstPort == {PORT}", backend=backend()) as catcher:
            udp_socket("127.0.0.1").sendto(b"template", ("127.0.0.1", PORT))
            template = catcher.recv(timeout=1)
            catcher.send(template)
        assert receive_expected(server, 1) == [b"template"]
        with Divert("false", flags=Flag.SEND_ONLY, backend=backend()) as sender:
            sender.send(Packet(template.raw, template.address))
            with pytest.raises(DivertError, match="SEND_ONLY"):
                sender.recv(timeout=0.1)
            assert sender.stats()["injected"] == 1
        assert receive_expected(server, 1) == [b"template"]
