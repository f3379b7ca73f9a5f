"""socketdump's and flowtrack's lines, and the Events view's endpoints: each written in its event's address family."""

from divertgui.engine.address import Address, EndpointData, Event, Layer
from divertgui.engine.address_text import event_endpoint_text
from divertgui.event_samples import event_line

LOOPBACK4 = 0xFFFF7F000001


def _line(ipv6: bool, **flow) -> str:
    address = Address(layer=Layer.SOCKET, event=Event.SOCKET_BIND, sniffed=True, outbound=True, ipv6=ipv6,
                      flow=EndpointData(process_id=1, protocol=6, process_name="nc", **flow))
    return event_line(address)


def test_an_ipv4_socket_s_unset_side_is_written_as_ipv4():
    # The kernel's programs (and WinDivert) leave an unset side all zeros, not ::ffff:0.0.0.0.
    assert _line(False, local_addr=LOOPBACK4, local_port=9002).endswith(" tcp    127.0.0.1:9002 -> 0.0.0.0:0")


def test_an_ipv6_socket_s_endpoints_are_bracketed():
    assert _line(True, local_addr=1, local_port=9001).endswith(" tcp    [::1]:9001 -> [::]:0")


def test_an_endpoint_is_written_in_its_event_s_family():
    assert event_endpoint_text(0, 0, False) == "0.0.0.0:0"
    assert event_endpoint_text(0xFFFF7F000001, 8093, False) == "127.0.0.1:8093"
    assert event_endpoint_text(1, 80, True) == "[::1]:80"
