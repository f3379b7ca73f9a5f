"""Receiving in an event loop: the handle's descriptor, recv_async and cancellation.

Each backend's fileno() (the NFQUEUE or NFLOG netlink socket, pydivert's
eBPF event descriptor, the SOCKET layer's ring buffer) becomes readable
when a packet is queued; recv_async waits on it with loop.add_reader and
takes packets only once it can return them.
"""

from __future__ import annotations

import asyncio
import select
import sys

import pytest

from divertgui.engine.address import Event, Flag
from divertgui.engine.errors import HandleClosedError
from divertgui.engine.handle import Divert

from .conftest import receive_all, udp_socket
from .socket_layer_fixtures import own_cgroup, socket_handle, start_in

pytestmark = pytest.mark.netns
__all__ = ["own_cgroup"]

PORT = 40421


def _readable(fd: int, seconds: float) -> bool:
    return bool(select.select([fd], [], [], seconds)[0])


@pytest.mark.parametrize("flags", [Flag(0), Flag.SNIFF])
def test_the_descriptor_is_readable_once_a_packet_is_queued(netns, backend, flags):
    with netns.entered():
        server = udp_socket("127.0.0.1", PORT)
        client = udp_socket("127.0.0.1")
        with Divert(f"udp.DstPort == {PORT}", flags=flags, backend=backend()) as handle:
            fd = handle.fileno()
            assert isinstance(fd, int)
            assert not _readable(fd, 0)
            client.sendto(b"wake up", ("127.0.0.1", PORT))
            assert _readable(fd, 5)
            packet = asyncio.run(handle.recv_async(timeout=5))
            assert packet.udp.dst_port == PORT and packet.payload == b"wake up"
            if not flags & Flag.SNIFF:
                handle.send(packet)
        assert receive_all(server, 0.5) == [b"wake up"]


def test_recv_async_leaves_the_loop_free_and_returns_the_packet(netns, backend):
    """While recv_async waits, other tasks of the loop run; the packet they cause is the one returned."""

    async def run(handle, client):
        waiting = asyncio.create_task(handle.recv_batch_async(8, timeout=5))
        for _ in range(3):
            await asyncio.sleep(0)
        assert not waiting.done()
        client.sendto(b"from the loop", ("127.0.0.1", PORT))
        batch = await waiting
        handle.send_batch(batch)
        return [packet.payload for packet in batch]

    with netns.entered():
        server = udp_socket("127.0.0.1", PORT)
        client = udp_socket("127.0.0.1")
        with Divert(f"udp.DstPort == {PORT}", backend=backend()) as handle:
            assert asyncio.run(run(handle, client)) == [b"from the loop"]
        assert receive_all(server, 0.5) == [b"from the loop"]


def test_a_cancelled_recv_async_leaves_the_handle_usable_and_loses_nothing(netns, backend):
    async def run(handle, client):
        payloads = []
        for attempt in range(4):
            # Two waiters on one handle share its reader; both are cancelled.
            waiting = [asyncio.create_task(handle.recv_async()) for _ in range(2)]
            await asyncio.sleep(0.05)
            for task in waiting:
                task.cancel()
            client.sendto(b"packet %d" % attempt, ("127.0.0.1", PORT))
            for task in waiting:
                with pytest.raises(asyncio.CancelledError):
                    await task
            packet = await handle.recv_async(timeout=5)
            handle.send(packet)
            payloads.append(packet.payload)
        with pytest.raises(TimeoutError):
            await handle.recv_async(timeout=0.2)
        return payloads

    expected = [b"packet %d" % i for i in range(4)]
    with netns.entered():
        server = udp_socket("127.0.0.1", PORT)
        client = udp_socket("127.0.0.1")
        with Divert(f"udp.DstPort == {PORT}", backend=backend()) as handle:
            assert asyncio.run(run(handle, client)) == expected
            assert handle.stats()["held"] == 0
        assert receive_all(server, 0.5) == expected


def test_close_and_shutdown_end_a_waiting_recv_async(netns):
    async def ended_by(handle, action) -> BaseException:
        waiting = asyncio.create_task(handle.recv_async())
        await asyncio.sleep(0.05)
        action()
        try:
            await asyncio.wait_for(waiting, 10)
        except HandleClosedError as exc:
            return exc
        raise AssertionError("recv_async returned a packet nobody sent")

    with netns.entered():
        shut = Divert(f"udp.DstPort == {PORT}").open()
        try:
            assert "shut down" in str(asyncio.run(ended_by(shut, lambda: shut.shutdown("recv"))))
        finally:
            shut.close()
        closed = Divert(f"udp.DstPort == {PORT}").open()
        assert "closed" in str(asyncio.run(ended_by(closed, closed.close)))


def test_the_socket_layer_ring_buffer_wakes_recv_async(netns, own_cgroup):
    port = 40422

    async def first_event(handle):
        waiting = asyncio.create_task(handle.recv_async(timeout=10))
        await asyncio.sleep(0)
        program = start_in(netns, own_cgroup, sys.executable, "-c",
                           f"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind(('127.0.0.1', {port}))")
        event = await waiting
        program.wait(timeout=10)
        return event

    with socket_handle(own_cgroup, f"localPort == {port}") as handle:
        fd = handle.fileno()
        assert isinstance(fd, int) and not _readable(fd, 0)
        event = asyncio.run(first_event(handle))
    assert (event.address.event, event.address.flow.local_port) == (Event.SOCKET_BIND, port)
