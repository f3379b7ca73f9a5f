"""A held HTTP request on the demo network edited to another length: the session renumbers
the rest of the connection both ways, and the copies the client retransmitted meanwhile
leave edited with it."""

from __future__ import annotations

import pytest

from divertgui.engine.packet import Packet
from divertgui.engine.store import Verdict
from tests.unit.session_harness import Running, start_demo

BOTH_WAYS = "tcp.DstPort == 80 or tcp.SrcPort == 80"
REQUESTS = "tcp.DstPort == 80 and tcp.PayloadLength > 0"


def rows_of(r: Running, predicate) -> list[int]:
    return [row for row in range(len(r.store)) if predicate(Packet(r.store.raw(row), r.store.address(row)))]


def hold_request_and_a_retransmission(r: Running) -> tuple[dict, dict, Packet]:
    """The first request held, then the client's retransmission of it, also held."""
    first = r.held()
    request = Packet(r.store.raw(first["row"]), r.store.address(first["row"]))
    port = request.tcp.src_port
    # From now on only this connection's requests are held; the others already held stay.
    r.post("set_intercept", filter=f"{REQUESTS} and tcp.SrcPort == {port}")
    again = r.held(limit=5)
    assert Packet(r.store.raw(again["row"])).payload == request.payload, "the client sent it again"
    return first, again, request


@pytest.mark.parametrize("change", ["longer", "shorter"])
def test_an_edit_to_another_length_keeps_the_demo_connection_going(running, change):
    start_demo(running, rate=300, filter=BOTH_WAYS)
    running.post("set_intercept", filter=REQUESTS)
    first, again, request = hold_request_and_a_retransmission(running)
    path = request.payload.split(b" ")[1]
    if change == "longer":
        payload = request.payload.replace(b"GET " + path, b"GET /edited-by-hand" + path, 1)
        answered = b"<h1>/edited-by-hand" + path + b"</h1>"
    else:
        payload = request.payload.replace(b"User-Agent: demo\r\n", b"", 1)
        answered = b"<h1>" + path + b"</h1>"
    edited = Packet(bytearray(request.raw), request.address.copy())
    edited.payload = payload
    running.post("forward", ids=[first["id"]], data={str(first["id"]): edited.raw.hex()}, fix=True)
    running.wait_for(lambda e: e["type"] == "held" and again["id"] in e["released"], "the copy released")

    assert running.store.verdict(again["row"]) == Verdict.MODIFIED
    assert Packet(running.store.raw(again["row"])).payload == payload, "the held copy left edited"
    port = request.tcp.src_port
    from_server = lambda p: p.tcp is not None and p.tcp.src_port == 80 and p.tcp.dst_port == port
    running.until(lambda: rows_of(running, lambda p: from_server(p) and answered in (p.payload or b"")),
                  "the server's answer to the edited request")
    # The server closes once the client's FIN, numbered after the edited request, arrives in order.
    running.until(lambda: rows_of(running, lambda p: from_server(p) and p.tcp.fin), "the server's FIN")
    stats = running.session.stats()
    assert stats["seq_adjusted"] > 0 and stats["resent_edited"] >= 1
    requests_of_port = rows_of(running, lambda p: p.tcp is not None and p.tcp.src_port == port
                               and p.tcp.dst_port == 80 and bool(p.payload))
    assert set(requests_of_port) == {first["row"], again["row"]}, "no later retransmission: the ACK matched"


def test_an_edit_to_another_length_says_when_the_answers_are_not_captured(running):
    start_demo(running, rate=300, filter="tcp.DstPort == 80")
    running.post("set_intercept", filter=REQUESTS)
    held = running.held()
    request = Packet(running.store.raw(held["row"]), running.store.address(held["row"]))
    edited = Packet(bytearray(request.raw), request.address.copy())
    edited.payload = request.payload + b"X-Added: 1\r\n"
    running.post("forward", ids=[held["id"]], data={str(held["id"]): edited.raw.hex()}, fix=True)
    error = running.wait_for(lambda e: e["type"] == "error", "a warning")
    assert error["where"] == "held" and "capture filter does not take the packets" in error["message"]
    assert "tcp.SrcPort == 80 or tcp.DstPort == 80" in error["message"]
