"""Each backend declares what it can do beyond the abstract methods, and what it
declares is what it implements: the handle and the session trust the declaration."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import divertgui.engine.backends as backends
from divertgui.engine.address import Flag, Layer
from divertgui.engine.backends.base import Backend
from divertgui.engine.backends.demo import DemoBackend
from divertgui.engine.handle import Divert
from tests.unit.session_harness import Running, start_demo


def _backend_classes() -> list[type[Backend]]:
    for info in pkgutil.iter_modules(backends.__path__):
        importlib.import_module(f"{backends.__name__}.{info.name}")
    found, todo = [], [Backend]
    while todo:
        for subclass in todo.pop().__subclasses__():
            todo.append(subclass)
            if subclass.__module__.startswith(backends.__name__):
                found.append(subclass)
    return found


BACKENDS = _backend_classes()


def test_every_backend_is_found():
    assert {cls.__name__ for cls in BACKENDS} >= {"NfqueueBackend", "PydivertBackend", "DemoBackend",
                                                   "ReplayBackend", "SocketBackend", "FlowBackend", "ReflectBackend"}


@pytest.mark.parametrize("cls", BACKENDS, ids=lambda cls: cls.__name__)
def test_declared_abilities_match_the_methods(cls):
    assert cls.passes_batches == (cls.pass_batch is not Backend.pass_batch)
    assert cls.paced == (cls.set_rate is not Backend.set_rate)


def test_pass_batch_without_the_ability_receives_and_sends():
    backend = DemoBackend(seed=3, rate=20_000)
    with Divert("true", backend=backend) as handle:
        passed = sum(handle.pass_batch(64, 0.2) for _ in range(5))
        stats = backend.stats()
    assert passed > 0
    assert stats["released"] == passed


def test_the_rate_is_set_on_the_demo_source_only():
    running = Running()
    try:
        running.post("set_rate", rate=10.0)
        error = running.wait_for(lambda e: e["type"] == "error", "error event")
        assert error["where"] == "rate" and "demo source only" in error["message"]
        start_demo(running, rate=0)
        running.post("set_rate", rate=10.0)
        running.until(lambda: running.session.backend.rate == 10.0, "the demo's rate change")
    finally:
        running.stop()
