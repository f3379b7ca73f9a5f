"""A service connection over a real socket pair: commands in, events and rows out,
bad input refused without effect, and everything released when the client leaves."""

import socket
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

from divertgui.engine.packet import Packet
from divertgui.engine.store import CaptureStore
from divertgui.engine.store_record import Verdict
from divertgui.service import framing
from divertgui.service.client import ServiceClient
from divertgui.service.connection import MAX_WAITING_COMMANDS, PROTOCOL_VERSION, Connection, Peer


class Served:
    """A Connection on one end of a socket pair, its client on the other."""

    def __init__(self):
        self.service_end, self.client_end = socket.socketpair()
        self.log: list[str] = []
        self.connection = Connection(self.service_end.recv, self.service_end.sendall, Peer("test client"),
                                     self.log.append)
        self.thread = threading.Thread(target=self.connection.run, daemon=True)
        self.thread.start()
        self.store = CaptureStore()
        self.events: list[dict] = []
        self.client = ServiceClient("unix:test", self.store, self.events.append)
        self.client._socket = self.client_end
        self.client._read, self.client._write = self.client_end.recv, self.client_end.sendall
        self.client.connected = True
        self.client._reader = threading.Thread(target=self.client._read_frames, daemon=True)
        self.client._reader.start()

    def raw(self, data: bytes) -> None:
        self.client_end.sendall(data)

    def until(self, condition, what: str, limit: float = 10.0):
        end = time.monotonic() + limit
        while time.monotonic() < end:
            value = condition()
            if value:
                return value
            time.sleep(0.01)
        raise AssertionError(f"{what} did not happen within {limit} s; events: {self.events[-5:]}")

    def errors(self) -> list[str]:
        return [e["message"] for e in self.events if e["type"] == "error"]

    def held(self) -> list[dict]:
        return [h for e in self.events if e["type"] == "held" for h in e["held"]]

    def ended(self) -> bool:
        self.thread.join(5)
        return not self.thread.is_alive()


@pytest.fixture
def served():
    s = Served()
    yield s
    s.client_end.close()
    s.thread.join(5)


def test_the_first_event_introduces_the_service(served):
    hello = served.until(lambda: served.client.hello, "hello")
    assert hello["version"] == PROTOCOL_VERSION == 2 and hello["host"] == socket.gethostname() and isinstance(hello["live"], str)


def test_bad_commands_get_an_error_event_and_change_nothing(served):
    served.client.post("start", source="demo", priority=40000)
    served.client.post("launch")
    served.raw(framing.encode(framing.JSON, b"[not json"))
    served.raw(framing.encode(framing.PACKETS, b"\x00\x00\x00\x00"))
    served.until(lambda: len(served.errors()) == 4, "four refusals")
    assert served.errors() == [
        "start.priority must be in -30000..30000, not 40000",
        served.errors()[1],
        "not JSON: Expecting value at character 1",
        "a client sends JSON command frames only, not frame kind 'P'",
    ]
    assert served.errors()[1].startswith("unknown command 'launch'")
    assert not [e for e in served.events if e["type"] not in ("hello", "error")]
    served.client.post("start", source="demo", rate=500.0)
    served.until(lambda: len(served.store) > 20, "rows after a good start")


def test_a_broken_frame_ends_the_connection_and_releases_what_is_held(served):
    served.client.post("start", source="demo", rate=2000.0)
    served.client.post("set_intercept", filter="tcp")
    served.until(lambda: len(served.held()) >= 3, "held packets")
    served.raw(b"\x7f\xff\xff\xffJ")
    assert served.ended()
    session = served.connection.session
    assert not session.held and session.backend is None
    assert session.stats()["forwarded"] >= 3
    assert any("broken frame" in line and "releasing held packets (forward)" in line for line in served.log)


def test_when_the_client_leaves_held_packets_go_by_the_hold_policy(served):
    served.client.post("start", source="demo", rate=2000.0)
    served.client.post("set_hold_timeout", seconds=0, action="drop")
    served.client.post("set_intercept", filter="tcp")
    served.until(lambda: len(served.held()) >= 3, "held packets")
    served.client_end.shutdown(socket.SHUT_RDWR)
    assert served.ended()
    stats = served.connection.session.stats()
    assert stats["user_dropped"] >= 3 and stats["forwarded"] == 0 and not served.connection.session.held


def test_an_edit_goes_to_the_service_and_comes_back_as_the_rows_new_bytes(served):
    served.client.post("start", source="demo", rate=2000.0)
    served.client.post("set_intercept", filter="tcp and tcp.PayloadLength > 0")
    held = served.until(lambda: served.held(), "a held packet")[0]
    served.client.post("set_intercept", filter="")
    packet = Packet(bytearray(served.store.raw(held["row"])))
    packet.payload = b"edited over the wire"
    served.client.post("forward", ids=[held["id"]], data={str(held["id"]): bytes(packet.raw).hex()}, fix=True)
    served.until(lambda: served.store.verdict(held["row"]) == Verdict.MODIFIED, "the edit")
    sent = Packet(served.store.raw(held["row"]))
    assert sent.payload == b"edited over the wire"
    assert served.store.original(held["row"]) != served.store.raw(held["row"])


def test_the_session_holds_no_more_than_its_bounds(served):
    served.connection.session.max_held = 5
    served.client.post("start", source="demo", rate=3000.0)
    served.client.post("set_intercept", filter="true")
    served.until(lambda: any("the most this session holds" in m for m in served.errors()), "the bound said")
    served.until(lambda: served.store.column("verdict").size > 100, "more rows")
    assert len(served.connection.session.held) == 5
    assert (served.store.column("verdict") == Verdict.HELD).sum() == 5


def test_divert_serve_as_a_child_process_serves_and_exits_when_its_stdin_closes():
    store, events = CaptureStore(), []
    client = ServiceClient("local", store, events.append)
    client.start()
    try:
        client.post("start", source="demo", rate=1000.0)
        end = time.monotonic() + 20
        while len(store) < 50 and time.monotonic() < end:
            time.sleep(0.02)
        assert len(store) >= 50, (events, client.stderr_text())
        assert client.hello and client.hello["pid"] == client.pid
    finally:
        client._process.stdin.close()
        assert client._process.wait(10) == 0
        client.close()
    assert "the client closed the connection" in client.stderr_text()


def heavy_filter(n: int = 0) -> str:
    """An intercept filter of about 8000 characters, the `n`th of many: one the session has not
    compiled yet, which takes it a while."""
    return " or ".join(f"tcp.DstPort == {port}" for port in range(1, 369)) + f" or tcp.DstPort == {n % 65536}"


def test_commands_waiting_for_a_busy_session_are_bounded_and_the_client_waits():
    service_end, client_end = socket.socketpair()
    connection = Connection(service_end.recv, service_end.sendall, Peer("flooding client"), lambda line: None)
    # The session's thread is not started yet: nothing takes the commands the reader posts.
    reader = threading.Thread(target=connection._read_commands, daemon=True)
    reader.start()
    # A write that waits two seconds waits for room the reader, waiting itself, will not make.
    client_end.settimeout(2.0)
    sent = 0
    for n in range(5_000):
        try:
            client_end.sendall(framing.encode_json({"type": "set_intercept", "filter": heavy_filter(n)}))
        except TimeoutError:
            break
        sent += 1
    else:
        raise AssertionError(f"the client sent {sent} commands without ever having to wait")
    waiting = connection.session._commands
    assert waiting.qsize() == MAX_WAITING_COMMANDS
    # What the reader has not taken sits in the socket's buffers: some of a megabyte, not the flood.
    assert (sent - MAX_WAITING_COMMANDS) * len(heavy_filter()) < 4 << 20
    client_end.close()
    # The client left, as the reader finds once the session makes room for what was still in the
    # socket: the session ends ahead of the commands then waiting, and counts them.
    session_thread = threading.Thread(target=connection.session.run, daemon=True)
    session_thread.start()
    session_thread.join(20)
    reader.join(10)
    connection.writer.close()
    assert not session_thread.is_alive() and not reader.is_alive()
    # Those waiting, and the one the reader may have been posting when the session ended.
    assert 0 < connection.session.commands_not_carried_out <= MAX_WAITING_COMMANDS + 1
    service_end.close()


class Recorder:
    """A Session stand-in that records what reaches it."""

    def __init__(self):
        self.posted = []
        self.ended = False

    def post(self, command):
        assert not self.ended
        self.posted.append(command)

    def end(self, drop_held=False):
        self.ended = True


frame_parts = st.one_of(
    st.binary(max_size=40),
    st.builds(lambda kind, body: framing.encode(kind, body), st.sampled_from(sorted(framing.KINDS)),
              st.binary(max_size=40)),
    st.builds(lambda kind, fields: framing.encode_json({"type": kind, **fields}),
              st.sampled_from(["start", "forward", "inject", "set_rules", "bogus", "open", "pause"]),
              st.dictionaries(st.sampled_from(["source", "ids", "data", "priority", "rules", "paused", "path"]),
                              st.one_of(st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3),
                                        st.booleans(), st.none()), max_size=3)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(frame_parts, max_size=8))
def test_whatever_a_client_sends_only_valid_commands_reach_the_session(parts):
    import io
    from divertgui.service.commands import validate
    sent = []
    connection = Connection(io.BytesIO(b"".join(parts)).read, sent.append, Peer("fuzz"), lambda line: None)
    connection.session = Recorder()
    connection._read_commands()
    connection.writer.close()
    assert connection.session.ended
    for command in connection.session.posted:
        assert validate(command) is command


def test_a_log_line_stays_one_line_whatever_the_client_put_in_it(capsys):
    from divertgui.service.serve import log
    log("open.path: cannot read /tmp/x\ndivert serve[1]: serving root\x1b[2J: No such file")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].endswith(r"cannot read /tmp/x\ndivert serve[1]: serving root\x1b[2J: No such file")
