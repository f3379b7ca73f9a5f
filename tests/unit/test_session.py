"""The Session loop on a real worker thread, fed by the demo network."""

from __future__ import annotations

import struct
import time

import pytest

from divertgui.engine.backends.demo import echo_packet
from divertgui.engine.checksum import calc_checksums
from divertgui.engine.pcapng import write_capture
from divertgui.engine.store import Verdict

from divertgui.engine.session import EMIT_INTERVAL
from tests.unit.session_harness import Running, start_demo

PING_REQUESTS = "icmp and icmp.Type == 8"


def replies(r: Running, ident: int, seq: int) -> list[int]:
    rows = []
    for row in range(len(r.store)):
        raw = r.store.raw(row)
        if raw[0] >> 4 == 4 and raw[9] == 1 and raw[20] == 0 and struct.unpack_from("!HH", raw, 24) == (ident, seq):
            rows.append(row)
    return rows


def test_rows_arrive_and_events_are_coalesced(running):
    start_demo(running, rate=5000)
    first = running.wait_for(lambda e: e["type"] == "rows" and e["count"] > 0, "rows")
    running.until(lambda: len(running.store) > 5000, "5000 stored packets")
    time.sleep(1.0)
    stopping = time.monotonic()
    running.stop()
    assert first["stats"]["packets"] == first["count"]
    # Shutting down flushes what is pending at once; before that, one event per interval.
    stamps = [t for t, e in running.log if e["type"] != "state" and t < stopping]
    assert len(stamps) <= (stamps[-1] - stamps[0]) / EMIT_INTERVAL + 2, "one event per interval at most"
    assert len(running.log) < len(running.store) / 50
    last_rows = [e for _, e in running.log if e["type"] == "rows"][-1]
    assert last_rows["count"] == len(running.store)
    assert set(running.store.column("verdict").tolist()) == {Verdict.PASSED}


def test_intercept_holds_and_an_edited_forward_is_what_the_network_sees(running):
    start_demo(running)
    running.post("set_intercept", filter=PING_REQUESTS)
    held = running.held()
    row = held["row"]
    assert running.store.verdict(row) == Verdict.HELD
    original = running.store.raw(row)
    ident, seq = struct.unpack_from("!HH", original, 24)
    running.post("set_intercept", filter="")
    edited = bytearray(original)
    edited[28:36] = b"EDITED!!"      # the payload, checksum left stale: the session fixes it
    running.post("forward", ids=[held["id"]], data={str(held["id"]): edited.hex()}, fix=True)
    released = running.wait_for(lambda e: e["type"] == "held" and held["id"] in e["released"], "release")
    assert released
    assert running.store.verdict(row) == Verdict.MODIFIED
    assert running.store.original(row) == original
    sent = running.store.raw(row)
    assert sent[28:36] == b"EDITED!!"
    check = bytearray(sent)
    calc_checksums(check)
    assert bytes(check) == sent, "the forwarded bytes carry correct checksums"
    assert sent in running.session.backend.received, "the demo network received the edited bytes"
    running.until(lambda: replies(running, ident, seq), "the echo reply")
    reply = running.store.raw(replies(running, ident, seq)[0])
    assert reply[28:36] == b"EDITED!!", "the peer answered what it received"


def test_drop_marks_the_row_and_the_request_gets_no_reply(running):
    start_demo(running)
    running.post("set_intercept", filter=PING_REQUESTS)
    held = running.held()
    running.post("set_intercept", filter="false")
    ident, seq = struct.unpack_from("!HH", running.store.raw(held["row"]), 24)
    running.post("drop", ids=[held["id"]])
    running.wait_for(lambda e: e["type"] == "held" and held["id"] in e["released"], "release")
    assert running.store.verdict(held["row"]) == Verdict.DROPPED
    time.sleep(0.3)     # well beyond the demo's round trips
    assert replies(running, ident, seq) == []
    assert running.session.stats()["user_dropped"] == 1


@pytest.mark.parametrize("action,verdict", [("drop", Verdict.DROPPED), ("forward", Verdict.PASSED)])
def test_hold_timeout_decides_by_itself(running, action, verdict):
    start_demo(running)
    running.post("set_hold_timeout", seconds=0.2, action=action)
    running.post("set_intercept", filter=PING_REQUESTS)
    held = running.held()
    running.post("set_intercept", filter="")
    running.wait_for(lambda e: e["type"] == "held" and held["id"] in e["released"], "expiry")
    assert running.store.verdict(held["row"]) == verdict
    assert running.session.stats()["hold_expired"] >= 1


def test_forward_all_and_drop_all_release_everything_held(running):
    start_demo(running, rate=3000)
    running.post("set_intercept", filter="udp")
    running.until(lambda: running.session.stats()["held"] >= 5, "five held packets")
    running.post("set_intercept", filter="")
    running.post("forward_all")
    running.until(lambda: running.session.stats()["held"] == 0, "forward all")
    running.post("set_intercept", filter="tcp")
    running.until(lambda: running.session.stats()["held"] >= 5, "five held packets")
    running.post("set_intercept", filter="")
    running.post("drop_all")
    running.until(lambda: running.session.stats()["held"] == 0, "drop all")
    verdicts = running.store.column("verdict")
    assert (verdicts == Verdict.HELD).sum() == 0
    assert (verdicts == Verdict.DROPPED).sum() >= 5


def test_inject_reaches_the_network_and_is_stored(running):
    start_demo(running, rate=0)
    this, web = bytes((10, 0, 0, 2)), bytes((198, 51, 100, 10))
    running.post("inject", data=echo_packet(this, web, False, 4242, 3, b"injected").hex(),
                 outbound=True, if_idx=2)
    running.until(lambda: replies(running, 4242, 3), "the reply to the injected request")
    assert running.store.verdict(0) == Verdict.INJECTED
    assert running.session.stats()["injected"] == 1


def test_bad_commands_come_back_as_errors_saying_where(running):
    running.post("set_intercept", filter="tcp and and udp")
    error = running.wait_for(lambda e: e["type"] == "error", "error")
    assert error["where"] == "intercept" and error["position"] == 8
    running.post("start", source="demo", filter="tcp.Bogus == 1")
    error = running.wait_for(lambda e: e["type"] == "error", "error")
    assert error["where"] == "filter" and "position" in error
    running.session.post({"type": "teleport"})
    error = running.wait_for(lambda e: e["type"] == "error", "error")
    assert "teleport" in error["message"]
    running.post("forward", ids=[99])
    error = running.wait_for(lambda e: e["type"] == "error", "error")
    assert "no held packet has id 99" in error["message"]
    running.post("inject", data="4500")
    error = running.wait_for(lambda e: e["type"] == "error", "error")
    assert "start a capture first" in error["message"]
    running.post("start", source="live", mode="sniff", workers=2)
    error = running.wait_for(lambda e: e["type"] == "error", "error")
    assert error["where"] == "workers" and "live capture in divert mode" in error["message"]


def test_pause_clear_and_stop(running):
    start_demo(running, rate=3000)
    running.until(lambda: len(running.store) > 100, "rows")
    running.post("pause", paused=True)
    running.wait_for(lambda e: e["type"] == "state" and e["paused"], "paused state")
    count = len(running.store)
    time.sleep(0.3)
    assert len(running.store) == count, "nothing is stored while paused"
    running.post("pause", paused=False)
    running.post("set_intercept", filter="udp")
    running.until(lambda: running.session.stats()["held"] >= 1, "a held packet")
    running.post("set_intercept", filter="")
    running.post("pause", paused=True)
    running.post("clear")
    cleared = running.wait_for(lambda e: e["type"] == "rows" and e["count"] < count, "rows after clear")
    assert cleared["count"] == cleared["stats"]["held"], "held packets keep rows in the emptied store"
    # Held before the clear, they had rows beyond 100; announced again, rows of the emptied store.
    again = running.wait_for(lambda e: e["type"] == "held" and e["held"]
                             and all(h["row"] < cleared["count"] for h in e["held"]), "held packets announced again")
    assert sorted(h["row"] for h in again["held"]) == list(range(cleared["count"]))
    order = [message for _, message in running.log]
    assert order.index(cleared) < order.index(again), "the emptied store is announced first"
    held_rows = list(running.session.held.values())
    assert held_rows and all(running.store.verdict(r) == Verdict.HELD for r in held_rows)
    running.post("stop")
    state = running.wait_for(lambda e: e["type"] == "state" and not e["running"], "stopped state")
    assert state["reason"] == "stopped"
    assert all(running.store.verdict(r) == Verdict.PASSED for r in held_rows), "stop lets held packets go"


def test_sniff_mode_stores_copies(running):
    start_demo(running, mode="sniff", filter="udp")
    running.until(lambda: len(running.store) > 20, "sniffed rows")
    assert set(running.store.column("verdict").tolist()) == {Verdict.SNIFFED}
    assert running.store.column("sniffed").all()


def test_replay_source_and_a_missing_file(running, tmp_path):
    from divertgui.engine.address import Address
    path = tmp_path / "three.pcapng"
    this, web = bytes((10, 0, 0, 2)), bytes((198, 51, 100, 10))
    packets = [(echo_packet(this, web, False, 1, i, b"r"), Address(outbound=True, if_idx=1), 10**18 + i)
               for i in range(3)]
    write_capture(path, packets)
    running.post("start", source="replay", path=str(path), speed=0.0, filter="true")
    running.wait_for(lambda e: e["type"] == "state" and not e["running"], "end of replay")
    assert [running.store.raw(r) for r in range(len(running.store))] == [p[0] for p in packets]
    running.post("start", source="replay", path=str(tmp_path / "missing.pcapng"), filter="true")
    error = running.wait_for(lambda e: e["type"] == "error", "error")
    assert "missing.pcapng" in error["message"]


LIVE_START = """
import json, threading
from divertgui.engine.protocol import command
from divertgui.engine.session import Session
events, stated = [], threading.Event()
def emit(message):
    events.append(message)
    if message["type"] in ("state", "error"):
        stated.set()
session = Session(emit)
thread = threading.Thread(target=session.run)
thread.start()
session.post(command("start", source="live", filter="icmp", mode="divert", priority=0, layer="NETWORK", rate=100.0))
stated.wait(20)
session.post(command("shutdown"))
thread.join(20)
print(json.dumps([m for m in events if m["type"] in ("state", "error")][0]))
"""


def test_live_capture_without_privilege_falls_back_to_demo_and_says_why():
    import json
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path
    missing = [tool for tool in ("unshare", "setpriv") if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        reason = f"needs root and {', '.join(missing) or 'unshare/setpriv'} to run a session without CAP_NET_ADMIN"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    # A throwaway network namespace, and no CAP_NET_ADMIN in it: live capture must fail there.
    result = subprocess.run(
        ["unshare", "--net", "setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin",
         sys.executable, "-c", LIVE_START],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout.strip().splitlines()[-1])
    assert state["type"] == "state" and state["running"] and state["source"] == "demo", state
    assert state["reason"].startswith("Live capture is not possible here")
    assert state["reason"].count(". ") == 0 and state["reason"].endswith("instead.")


def test_a_forward_edited_beyond_what_ip_carries_is_refused_and_the_packet_stays_held(running):
    start_demo(running)
    running.post("set_intercept", filter=PING_REQUESTS)
    held = running.held()
    running.post("set_intercept", filter="")
    original = running.store.raw(held["row"])
    running.post("forward", ids=[held["id"]], data={str(held["id"]): (original + b"x" * 66000).hex()})
    error = running.wait_for(lambda e: e["type"] == "error", "error")
    assert error["where"] == "held" and "65535" in error["message"] and "stays held" in error["message"]
    assert running.store.verdict(held["row"]) == Verdict.HELD
    running.post("forward", ids=[held["id"]])
    running.wait_for(lambda e: e["type"] == "held" and held["id"] in e["released"], "release")
    assert running.store.verdict(held["row"]) == Verdict.PASSED
    assert original in running.session.backend.received
