"""run_conditions over the demo network: every diverted packet gets its verdict, held ones
are released on stop, and the counters of the pipeline and the backend agree."""

import threading
import time

from divertgui.engine.backends.demo import DemoBackend
from divertgui.engine.handle import Divert
from divertgui.engine.rules import Pipeline, rules_from_dicts
from divertgui.engine.rules.runner import run_conditions


def test_runner_releases_everything_and_counts_agree():
    backend = DemoBackend(seed=3, rate=3000.0)
    rules = rules_from_dicts([
        {"kind": "lag", "inbound_ms": 30, "outbound_ms": 200},
        {"kind": "drop", "chance": 20.0},
        {"kind": "duplicate", "count": 2, "chance": 30.0},
    ])
    pipeline, stop, result = Pipeline(rules, seed=1), threading.Event(), {}
    with Divert("true", backend=backend) as handle:
        runner = threading.Thread(target=lambda: result.update(run_conditions(handle, pipeline, stop)))
        runner.start()
        deadline = time.monotonic() + 10
        while pipeline.received < 300 and time.monotonic() < deadline:
            time.sleep(0.01)
        held_while_running = pipeline.held()
        stop.set()
        runner.join(10)
        demo = backend.stats()
    assert result["received"] >= 300 and held_while_running > 0
    assert result["held"] == 0 and demo["pending"] == 0 and result["send_errors"] == 0
    lag, drop, duplicate = result["rules"]
    # Every diverted packet was released or dropped by a verdict; every copy was injected.
    assert demo["released"] + demo["dropped"] == result["received"]
    assert demo["dropped"] == drop["dropped"] > 0
    assert demo["injected"] == duplicate["duplicated"] > 0
    assert lag["delayed"] == result["received"]


def test_pacing_under_a_flood_never_sleeps_past_a_held_packets_due_time(monkeypatch):
    from divertgui.engine.rules import runner
    backend = DemoBackend(seed=5, rate=3000.0)
    pipeline = Pipeline(rules_from_dicts([{"kind": "lag", "inbound_ms": 3, "outbound_ms": 3}]), seed=1)
    stop, result, pauses = threading.Event(), {}, []
    sleep, read = time.sleep, [0]

    def clock():
        # The runner's clock, remembering its last reading: the one the runner bounded its pause by.
        read[0] = time.monotonic_ns()
        return read[0]

    def recorded_sleep(seconds):
        if threading.current_thread() is loop:
            deadline = pipeline.next_deadline()
            pauses.append((seconds, None if deadline is None else (deadline - read[0]) / 1e9))
        sleep(seconds)

    monkeypatch.setattr(runner.time, "sleep", recorded_sleep)
    with Divert("true", backend=backend) as handle:
        # A most wait long enough that, unbounded, 3,000 packets/s would make it sleep about 10 ms a read.
        loop = threading.Thread(target=lambda: result.update(
            run_conditions(handle, pipeline, stop, clock=clock, gather=0.05)))
        loop.start()
        deadline = time.monotonic() + 10
        while len(pauses) < 20 and time.monotonic() < deadline:
            sleep(0.01)
        stop.set()
        loop.join(10)
    assert len(pauses) >= 20 and result["held"] == 0
    assert any(due is not None for _pause, due in pauses)
    # Each pause ends no later than the next held packet is due, as the clock read before it said
    # (one already due, on a busy machine, gets no pause at all).
    assert all(due is None or 0 < pause <= due + 1e-9 for pause, due in pauses)
