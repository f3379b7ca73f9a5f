"""A Session on a real worker thread, for tests that drive it with commands and read its events."""

from __future__ import annotations

import queue
import threading
import time

from divertgui.engine.protocol import EVENTS, command
from divertgui.engine.session import Session


class Running:
    """A Session on its own thread; events are collected as they are emitted."""

    def __init__(self) -> None:
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.log: list[tuple[float, dict]] = []
        self.session = Session(self._emit)
        self.thread = threading.Thread(target=self.session.run, daemon=True)
        self.thread.start()

    def _emit(self, message: dict) -> None:
        assert message["type"] in EVENTS
        self.log.append((time.monotonic(), message))
        self.events.put(message)

    @property
    def store(self):
        return self.session.store

    def post(self, kind: str, **fields) -> None:
        self.session.post(command(kind, **fields))

    def wait_for(self, predicate, what: str, limit: float = 10.0) -> dict:
        """The first event satisfying `predicate`; fails after `limit` seconds without one."""
        end = time.monotonic() + limit
        while time.monotonic() < end:
            try:
                message = self.events.get(timeout=0.05)
            except queue.Empty:
                continue
            if predicate(message):
                return message
        raise AssertionError(f"no {what} within {limit} s")

    def until(self, condition, what: str, limit: float = 10.0) -> None:
        end = time.monotonic() + limit
        while not condition():
            if time.monotonic() > end:
                raise AssertionError(f"{what} did not happen within {limit} s")
            time.sleep(0.01)

    def held(self, limit: float = 10.0) -> dict:
        message = self.wait_for(lambda e: e["type"] == "held" and e["held"], "held packet", limit)
        return message["held"][0]

    def stop(self) -> None:
        self.post("shutdown")
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


def start_demo(r: Running, rate: float = 2000.0, **fields) -> None:
    r.post("start", source="demo", filter=fields.pop("filter", "true"), mode=fields.pop("mode", "divert"),
           priority=0, layer="NETWORK", rate=rate, **fields)
    state = r.wait_for(lambda e: e["type"] in ("state", "error"), "state event")
    assert state["type"] == "state" and state["running"] and state["source"] == "demo", state
