"""A capture file dumpcap wrote on a veth (Ethernet, no direction recorded) opened in the window:
no row claims a direction, the direction chart counts none, and File > Save keeps it so."""

import pytest

from divertgui.models.packet_table import DIRECTION
from tests.integration.conftest import veth  # noqa: F401
from tests.integration.dumpcap_pings import PACKETS, record_pings
from tests.unit.test_capture_file_origins import directions, interface_names

pytestmark = pytest.mark.netns


def test_a_dumpcap_file_opened_shows_no_direction_and_counts_none(qtbot, workbench, veth, tmp_path):  # noqa: F811
    path = tmp_path / "pings.pcapng"
    record_pings(veth, path)
    assert directions(path) == [""] * PACKETS, "dumpcap records no direction on Ethernet"
    window = workbench.window
    window.files.open_capture(str(path))
    qtbot.waitUntil(lambda: window.count == PACKETS, timeout=10000)
    model = window.table_model
    assert [model.index(row, DIRECTION).data() for row in range(PACKETS)] == ["?"] * PACKETS
    qtbot.waitUntil(lambda: window.stats.total_packets == PACKETS, timeout=5000)
    _, _, _, inbound, outbound = window.stats.window(60)
    assert inbound.sum() == 0 and outbound.sum() == 0
    saved = tmp_path / "saved.pcapng"
    assert window.files.save_capture(str(saved)) == PACKETS
    assert directions(saved) == [""] * PACKETS
    assert interface_names(saved) == [veth.device] * PACKETS
