"""The session's event capture commands and "events" events: a bad filter says which layer and
where, a capture file's events come back with the store they belong to, and a clear empties both."""

from __future__ import annotations

import random

from divertgui.engine.address import Address
from divertgui.engine.saved_capture import save_rows
from divertgui.engine.store import CaptureStore
from tests.packet_gen import ipv4_packet
from tests.unit.test_event_records import sample_records


def test_a_bad_filter_says_which_layer_and_where_and_nothing_is_watched(running):
    running.post("start_events", layers={"FLOW": "", "SOCKET": "event == CONECT"})
    error = running.wait_for(lambda e: e["type"] == "error", "error")
    assert error["where"] == "events" and error["message"].startswith("SOCKET filter: ")
    assert error["position"] == len("event == ")
    said = running.wait_for(lambda e: e["type"] == "events", "events")
    assert (said["events"], said["capturing"]) == ([], {})


def test_the_events_of_an_opened_file_come_with_its_rows_and_leave_with_them(running, tmp_path):
    records = sample_records()
    store = CaptureStore()
    store.append_batch([ipv4_packet(random.Random(3))], [Address()], 1, [records[0].time_ns])
    path = tmp_path / "with-events.pcapng"
    save_rows(store, path, range(1), records)
    running.post("open", path=str(path))
    seen = {}
    running.wait_for(lambda e: seen.setdefault(e["type"], e) and {"rows", "events"} <= set(seen), "rows and events")
    rows, said = seen["rows"], seen["events"]
    assert rows["count"] == 1
    assert said["generation"] == rows["generation"] == running.store.generation
    assert said["events"] == [record.to_json() for record in records]
    running.post("clear")
    cleared = running.wait_for(lambda e: e["type"] == "rows" and e["count"] == 0, "the emptied store")
    assert cleared["generation"] == said["generation"] + 1


def test_events_beyond_what_the_session_keeps_are_counted_and_said_once(monkeypatch):
    from divertgui.engine import session as session_module
    monkeypatch.setattr(session_module, "MAX_PENDING_EVENTS", 3)
    sent = []
    session = session_module.Session(sent.append)
    session._queue_events(sample_records()[:2])
    session._queue_events(sample_records()[:4])
    assert session.stats()["events_lost"] == 3
    session._flush(force=True)
    errors = [e for e in sent if e["type"] == "error"]
    assert len(errors) == 1 and errors[0]["where"] == "events" and "events_lost" in errors[0]["message"]
    assert [e["events"] for e in sent if e["type"] == "events"] == [
        [r.to_json() for r in sample_records()[:2] + sample_records()[:1]]]
