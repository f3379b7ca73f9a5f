"""The Events view on its own: the events a session sends fill it in order, belong to the store
they came with, the filter is checked at each chosen layer before anything is asked, and an
event's process or flow filters the packet list."""

from divertgui.engine.store import CaptureStore
from divertgui.views.main_window import MainWindow
from tests.unit.test_event_records import sample_records


def _window(qtbot):
    posted = []
    window = MainWindow(CaptureStore(), lambda kind, **fields: posted.append((kind, fields)))
    qtbot.addWidget(window)
    return window, posted


def _events(records, generation=0, capturing=None):
    return {"type": "events", "generation": generation, "events": [r if isinstance(r, dict) else r.to_json() for r in records],
            "capturing": capturing or {}, "cgroup": ""}


def test_events_fill_the_view_and_leave_with_the_store_they_came_with(qtbot):
    window, _ = _window(qtbot)
    view, records = window.events_view, sample_records()
    window.handle_event(_events(records[:4], capturing={"FLOW": "", "SOCKET": "processId == 5"}))
    window.handle_event(_events(records[4:] + [{"layer": "FLOW"}]))
    assert view.model.records == records
    assert view.model.malformed == 1 and "malformed events left out" in view.status.text()
    assert view.start_button.text() == "Start"
    window.handle_event(_events([], capturing={"REFLECT": ""}))
    assert view.start_button.text() == "Stop" and "watching REFLECT" in view.status.text()
    window.handle_event({"type": "error", "where": "connection", "message": "local: the service closed"})
    assert view.start_button.text() == "Start" and view.model.records == records
    view.store_emptied(1)
    assert view.model.rowCount() == 0
    window.handle_event(_events(records[:2], generation=0))      # sent before the store was emptied
    assert view.model.rowCount() == 0
    window.handle_event(_events(records[:2], generation=2))
    assert view.model.records == records[:2] and view.model.generation == 2


def test_the_filter_must_hold_at_every_chosen_layer_before_the_service_is_asked(qtbot):
    from divertgui.engine.address import Layer
    window, posted = _window(qtbot)
    view = window.events_view
    view.filter.set_text("localPort == 80")
    assert not view.start()
    assert "at the REFLECT layer" in view.status.text() and posted == []
    view.layer_boxes[Layer.REFLECT].setChecked(False)
    view.cgroup.setText(" system.slice ")
    assert view.start()
    assert posted == [("start_events", {"layers": {"FLOW": "localPort == 80", "SOCKET": "localPort == 80"},
                                        "cgroup": "system.slice"})]


def test_an_event_filters_the_packet_list_on_its_process_or_its_flow(qtbot):
    window, _ = _window(qtbot)
    view, records = window.events_view, sample_records()
    window.handle_event(_events(records))
    established = records[0]             # FLOW ESTABLISHED over IPv6, TCP
    view.table.selectRow(0)
    assert view.flow_action.isEnabled() and view.process_action.text() == f"Filter on proc 0 ✓ ({established.pid})"
    view.flow_action.trigger()
    assert window.display_filter.text() == (
        "(ipv6.SrcAddr == 2001:db8:: and ipv6.DstAddr == 2001:db8::100 and tcp.SrcPort == 50000 and "
        "tcp.DstPort == 443) or (ipv6.SrcAddr == 2001:db8::100 and ipv6.DstAddr == 2001:db8:: and "
        "tcp.SrcPort == 443 and tcp.DstPort == 50000)")
    view.process_action.trigger()
    assert window.table_model.process_pid == established.pid
    view.table.selectRow(len(records) - 1)           # REFLECT: no flow
    assert not view.flow_action.isEnabled()
