"""A live capture's Session inside one worker process of a WorkerPool.

Each worker runs a Session of its own on the handle of its queue: the rules
and the intercept filter see only that worker's flows, so per-flow rule
state and held packets stay where their verdicts are given. What the
Session stores goes to the capture service (divertgui.engine.pooled_capture)
as messages on the worker's own pipe (divertgui.engine.worker_pipes), in the
order it happened:

    ("rows", pid, generation, first_row, raws, addresses, verdicts, wall_ns)
    ("verdict", pid, generation, row, verdict)
    ("edited", pid, generation, row, raw)
    ("event", pid, generation, event dict)

after ("hello", pid, 0, slot), which says which of the pool's workers it is.
A worker's command queue starts with WORKER_START and the settings in force
(intercept filter, rules, hold timeout, pause), which it applies before its
first packet.

Rows are this worker's own numbers; `generation` counts the worker's clears,
so the service can tell rows of an emptied store from the new ones.
"""

from __future__ import annotations

import os
import queue as queue_module
import threading
import time
from typing import NamedTuple

from divertgui.engine.address import Layer
from divertgui.engine.processes import ProcessList
from divertgui.engine.worker_pipes import Outbox
from divertgui.engine.worker_pool import START_TIMEOUT, worker_seed

COMMAND_POLL = 0.05     # seconds a worker waits for a command before it looks at `stop` again
WORKER_START = "worker_start"


class WorkerChannels(NamedTuple):
    """What a worker is given: the write end of its pipe for everything it reports, and its own queue
    for commands."""
    reports: object
    commands: object
    layer: int
    slot: int


class RelayedStore:
    """The writing side of a CaptureStore, sent to the capture service instead of kept."""

    def __init__(self, put):
        self._put = put
        self._pid = os.getpid()
        self._count = 0
        self.bytes_stored = 0
        self.generation = 0
        self.processes = ProcessList()

    def __len__(self) -> int:
        return self._count

    def append(self, raw: bytes, address, verdict, wall_ns: int) -> int:
        return self.append_batch((raw,), (address,), verdict, wall_ns).start

    def append_batch(self, raws, addresses, verdicts, wall_ns, processes=0) -> range:
        first = self._count
        raws = [bytes(raw) for raw in raws]
        verdicts = verdicts if isinstance(verdicts, int) else [int(v) for v in verdicts]
        self._put(("rows", self._pid, self.generation, first, raws, list(addresses), verdicts, wall_ns))
        self._count += len(raws)
        self.bytes_stored += sum(map(len, raws))
        return range(first, self._count)

    def name_interfaces(self, names: dict[int, str], host: int = 0) -> None:
        """Nothing: the pool names the interfaces of the rows it appends to the service's store."""

    def set_verdict(self, row: int, verdict) -> None:
        self._put(("verdict", self._pid, self.generation, row, int(verdict)))

    def set_edited(self, row: int, raw: bytes) -> None:
        self._put(("edited", self._pid, self.generation, row, bytes(raw)))

    def clear(self) -> None:
        self._count = 0
        self.bytes_stored = 0
        self.generation += 1

    def send_event(self, message: dict) -> None:
        self._put(("event", self._pid, self.generation, message))


def run_session(handle, stop, channels: WorkerChannels) -> dict:
    """A WorkerPool's work: a divert Session on `handle` until `stop`; what it held is forwarded then."""
    from divertgui.engine.session import Session
    reports = Outbox(channels.reports)
    store = RelayedStore(reports.put)
    session = Session(store.send_event, store, gui_in_process=False)
    session.attach_live(handle, Layer(channels.layer))
    reports.put(("hello", os.getpid(), 0, channels.slot))

    def post(command: dict) -> None:
        session.post(for_worker(command, channels.slot))

    for setting in _settings(channels.commands, stop):
        post(setting)

    def take_commands() -> None:
        while not stop.is_set():
            try:
                post(channels.commands.get(timeout=COMMAND_POLL))
            except queue_module.Empty:
                continue
            except (EOFError, OSError):
                break
        # The pool stops its workers after removing its rule: a drop_all sent before that still counts.
        take_waiting(channels.commands, post)
        session.post({"type": "shutdown"})

    reader = threading.Thread(target=take_commands, name="worker-commands", daemon=True)
    reader.start()
    session.run()
    # The service has this worker's counters from its last rows event; the pool sums the handle's.
    return {}


def for_worker(command: dict, slot: int) -> dict:
    """The service's command as the worker of `slot` carries it out: rules seeded with the worker's own
    seed, since the same seed in every worker would make their drop and duplicate draws move in step."""
    if command.get("type") != "set_rules":
        return command
    return dict(command, seed=worker_seed(int(command.get("seed", 0)), slot))


def _settings(commands, stop) -> list[dict]:
    """The settings of the service's WORKER_START, the first command a worker gets."""
    end = time.monotonic() + START_TIMEOUT
    while not stop.is_set() and time.monotonic() < end:
        try:
            message = commands.get(timeout=COMMAND_POLL)
        except queue_module.Empty:
            continue
        except (EOFError, OSError):
            break
        if message.get("type") == WORKER_START:
            return message["settings"]
    return []


def take_waiting(commands, post) -> None:
    """The commands already queued for this worker, to `post`."""
    try:
        while True:
            post(commands.get_nowait())
    except (queue_module.Empty, EOFError, OSError):
        pass
