"""UDP flows at the FLOW layer, the parts user space decides: which ESTABLISHED records the kernel
passes up for a filter on DELETED, and the open flows each closed socket's DELETED events come from."""

from __future__ import annotations

import pytest

from divertgui.engine.address import Address, EndpointData, Event, Layer
from divertgui.engine.backends import socket_layer
from divertgui.engine.backends.socket_layer import OpenUdpFlows
from divertgui.engine.backends.udp_flow_programs import as_deleted
from divertgui.engine.filter import compile_filter


def _established(endpoint: int, remote_port: int, timestamp: int = 1) -> Address:
    return Address(layer=Layer.FLOW, event=Event.FLOW_ESTABLISHED, timestamp=timestamp, outbound=True,
                   flow=EndpointData(endpoint_id=endpoint, process_id=7, local_port=5000, remote_port=remote_port,
                                     protocol=17))


@pytest.mark.parametrize("text,as_deleted_text", [
    ("event == DELETED", "true"),
    ("event == ESTABLISHED and remotePort == 53", "false"),
    ("event != ESTABLISHED or remotePort == 53", "true"),
    ("event == DELETED and remotePort == 53", "remotePort == 53"),
    ("timestamp > 100 and event == DELETED", "true"),
])
def test_the_kernel_filter_also_takes_the_flows_whose_deleted_the_filter_may_want(text, as_deleted_text):
    """An ESTABLISHED record goes up when the filter accepts it, or this: the filter on the
    same flow's DELETED, with a later timestamp taken as matching."""
    assert as_deleted(compile_filter(text, Layer.FLOW).tree) == compile_filter(as_deleted_text, Layer.FLOW).tree


def test_a_closed_socket_gives_each_of_its_flows_deleted_with_the_close_time():
    flows = OpenUdpFlows()
    assert flows.open(_established(1, 53)) == 0
    flows.open(_established(1, 123))
    flows.open(_established(1, 53, timestamp=3))     # reported again: the kernel's seen map forgot it
    flows.open(_established(2, 53))
    deleted = flows.close(1, timestamp=99)
    assert [(a.event, a.timestamp, a.flow.remote_port, a.flow.process_id) for a in deleted] == \
        [(Event.FLOW_DELETED, 99, 53, 7), (Event.FLOW_DELETED, 99, 123, 7)]
    assert flows.close(1, timestamp=100) == []
    assert [a.flow.endpoint_id for a in flows.close(2, timestamp=100)] == [2]


def test_beyond_the_bound_the_oldest_sockets_flows_are_forgotten_and_counted(monkeypatch):
    monkeypatch.setattr(socket_layer, "TABLE_ENTRIES", 3)
    flows = OpenUdpFlows()
    for endpoint, port in ((1, 1), (1, 2), (2, 1)):
        assert flows.open(_established(endpoint, port)) == 0
    assert flows.open(_established(3, 1)) == 2
    assert flows.close(1, 5) == [] and len(flows.close(2, 5)) == 1
