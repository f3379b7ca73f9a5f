"""A live capture over several worker processes, as the Session's source.

A WorkerPool spreads the capture filter's packets over N NFQUEUE queues, a
flow always to the same one; each worker runs a Session of its own on its
queue (divertgui.engine.worker_session): the rules, the intercept filter and
the packets it holds stay with the worker whose queue holds their verdicts.
Here the workers' rows go into the one store, their held packets get ids of
this capture, and the window's commands go to the worker concerned: verdicts
and edits to the worker holding the packet, settings to all of them (and
again to a worker that was restarted). A worker that dies takes the packets
it held with it, as the kernel drops what an NFQUEUE reader leaves: they are
shown dropped and counted as held_lost_with_worker; meanwhile its queue fails
open, and the pool counts the packets that were in it.
"""

from __future__ import annotations

import bisect
import contextlib
import threading
import time
from typing import Callable

from divertgui.engine.address import Flag, Layer
from divertgui.engine.errors import SessionError
from divertgui.engine.store_record import Verdict
from divertgui.engine.worker_pipes import WorkerPipes
from divertgui.engine.worker_pool import START_TIMEOUT, STOP_TIMEOUT, WorkerPool, add_counters
from divertgui.engine.worker_session import WORKER_START, WorkerChannels, run_session

MESSAGES_PER_PUMP = 256
SETTINGS = ("set_rules", "set_intercept", "set_hold_timeout", "pause")   # the latest of each goes to a new worker
BROADCAST = frozenset({*SETTINGS, "clear", "forward_all", "drop_all"})
BY_ID = frozenset({"forward", "forward_unmodified", "drop"})
COMMANDS = BROADCAST | BY_ID | {"inject"}
WORKERS_ONLY = BY_ID | {"inject", "forward_all", "drop_all"}    # the service's Session holds no packet


class PooledCapture:
    def __init__(self, store, filter_text: str, layer: Layer, priority: int, workers: int,
                 settings: list[dict], processes_of: Callable[[list, list], list] | None = None,
                 name_interfaces: Callable[[list], None] | None = None):
        """`settings`: the commands of SETTINGS in force, which each worker takes before its first packet;
        `name_interfaces(addresses)` tells the store the names of the interfaces of rows about to be appended."""
        self.store = store
        self.workers = workers
        self._processes_of = processes_of
        self._name_interfaces = name_interfaces
        from divertgui.engine import fork_server
        context = fork_server.context()
        self._reports = WorkerPipes(context)
        self._settings = {setting["type"]: setting for setting in settings}
        self._channels = SlotChannels(context, self._reports, layer, lambda: list(self._settings.values()))
        self._pool = WorkerPool(filter_text, run_session, workers, layer, priority, Flag.FAIL_OPEN,
                                slot_options=self._channels, on_started=self._channels.started)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run_pool, name="worker-pool", daemon=True)
        self._slot_pid: dict[int, int] = {}
        self._commands: dict[int, object] = {}         # pid -> its command queue
        self._generation: dict[int, int] = {}          # pid -> clears sent to it (its store's generation)
        self._row_starts: dict[int, list[int]] = {}    # pid -> first row of each batch, its numbering
        self._row_bases: dict[int, list[int]] = {}     # pid -> the same rows in the store
        self._stats: dict[int, dict] = {}              # pid -> its session's last counters
        self._held: dict[int, tuple[int, int, int]] = {}   # id -> (pid, the worker's id, store row)
        self._ids: dict[tuple[int, int], int] = {}
        self._next_id = 1
        self.held_lost = 0
        self._newly_held: list[dict] = []
        self._released: list[int] = []
        self._errors: list[str] = []
        self._errors_said: set[str] = set()

    # -- running ----------------------------------------------------------------------

    def start(self) -> "PooledCapture":
        """Starts the workers; returns once packets flow to them, SessionError when they cannot."""
        self._thread.start()
        end = time.monotonic() + START_TIMEOUT * 2
        while not self._ready.is_set() and self._thread.is_alive() and time.monotonic() < end:
            self._ready.wait(0.05)
            self.pump(0)
        if not self._ready.is_set():
            self.close()
            raise SessionError(f"the {self.workers} capture workers could not start: "
                               f"{self._failure or 'they did not start in time'}", "workers")
        return self

    def _run_pool(self) -> None:
        try:
            self._pool.run(self._stop, self._ready.set)
        except BaseException as exc:   # said by start(), or as the capture's end
            self._failure = exc

    def close(self) -> None:
        """Stops diverting; the workers forward what they hold and send their last rows."""
        self._stop.set()
        end = time.monotonic() + START_TIMEOUT + STOP_TIMEOUT
        while self._thread.is_alive() and time.monotonic() < end:
            self.pump(0.05)
        self._thread.join(1)
        while self.pump(0):
            pass
        for slot_pid in list(self._slot_pid.values()):
            self._worker_gone(slot_pid)
        self._reports.close()

    @property
    def failed(self) -> str:
        """Why the pool ended by itself, "" while it runs."""
        if self._thread.is_alive() or self._stop.is_set() or not self._ready.is_set():
            return ""
        return str(self._failure or "the capture workers ended")

    # -- from the workers -----------------------------------------------------------------

    def pump(self, timeout: float) -> bool:
        """Takes what the workers sent, waiting up to `timeout` for the first; whether anything came."""
        messages = self._reports.receive(timeout, MESSAGES_PER_PUMP)
        for message in messages:
            self._take(*message)
        return bool(messages)

    def _take(self, kind: str, pid: int, generation: int, *fields) -> None:
        if kind == "hello":
            self._worker_started(fields[0], pid)
            return
        if pid not in self._generation:
            return
        current = generation == self._generation[pid]
        if kind == "rows" and current:
            self._append(pid, *fields)
        elif kind == "verdict" and current:
            self.store.set_verdict(self._row(pid, fields[0]), fields[1])
        elif kind == "edited" and current:
            self.store.set_edited(self._row(pid, fields[0]), fields[1])
        elif kind == "event":
            self._event(pid, fields[0], current)

    def _worker_started(self, slot: int, pid: int) -> None:
        previous = self._slot_pid.get(slot)
        if previous is not None:
            self._worker_gone(previous)
        self._slot_pid[slot] = pid
        self._commands[pid] = self._channels.latest[slot]
        self._generation[pid] = 0
        self._row_starts[pid], self._row_bases[pid] = [], []

    def _worker_gone(self, pid: int) -> None:
        """The packets a worker held when it ended without forwarding them were dropped with its queue."""
        for ident, (owner, local, row) in list(self._held.items()):
            if owner == pid:
                del self._held[ident]
                del self._ids[owner, local]
                self.store.set_verdict(row, Verdict.DROPPED)
                self._released.append(ident)
                self.held_lost += 1
        if pid in self._stats:
            # What it counted stays in the totals; its rows are no longer announced.
            self._stats[pid] = dict(self._stats[pid], held=0)
        self._generation.pop(pid, None)
        self._commands.pop(pid, None)

    def _append(self, pid: int, first: int, raws: list, addresses: list, verdicts, wall_ns) -> None:
        processes = self._processes_of(raws, addresses) if self._processes_of is not None else 0
        if self._name_interfaces is not None:
            self._name_interfaces(addresses)
        rows = self.store.append_batch(raws, addresses, verdicts, wall_ns, processes)
        self._row_starts[pid].append(first)
        self._row_bases[pid].append(rows.start)

    def _row(self, pid: int, row: int) -> int:
        """The store's row of a worker's row."""
        starts = self._row_starts[pid]
        batch = bisect.bisect_right(starts, row) - 1
        return self._row_bases[pid][batch] + row - starts[batch]

    def _event(self, pid: int, message: dict, current: bool) -> None:
        kind = message.get("type")
        if kind == "held":
            for local in message["released"]:
                ident = self._ids.pop((pid, local), None)
                if ident is not None:
                    del self._held[ident]
                    self._released.append(ident)
            if current:
                for entry in message["held"]:
                    self._hold(pid, entry["id"], self._row(pid, entry["row"]))
        elif kind == "rows":
            self._stats[pid] = message["stats"]
        elif kind == "error" and message["message"] not in self._errors_said:
            # Every worker says the same of a setting they all refused: once is enough.
            self._errors_said.add(message["message"])
            self._errors.append(message["message"])

    def _hold(self, pid: int, local: int, row: int) -> None:
        ident = self._ids.get((pid, local))
        if ident is None:
            ident = self._ids[pid, local] = self._next_id
            self._next_id += 1
        self._held[ident] = (pid, local, row)
        self._newly_held.append({"id": ident, "row": row})

    def news(self) -> tuple[list[dict], list[int], list[str]]:
        """Packets held and released, and errors, since the last call."""
        news = self._newly_held, self._released, self._errors
        self._newly_held, self._released, self._errors = [], [], []
        return news

    @property
    def held(self) -> dict[int, int]:
        return {ident: row for ident, (_, _, row) in self._held.items()}

    def stats(self) -> tuple[dict, dict]:
        """The workers' sessions' counters summed, each worker once; and their handles' as the pool sums them."""
        sessions: dict = {}
        for stats in list(self._stats.values()):
            add_counters(sessions, stats)
        handles: dict = {}
        with contextlib.suppress(RuntimeError):    # the pool's thread added a worker meanwhile
            handles = self._pool.totals()
        handles["held_lost_with_worker"] = self.held_lost
        return sessions, handles

    # -- to the workers -----------------------------------------------------------------

    def carry_out(self, command: dict) -> None:
        kind = command["type"]
        if kind in BY_ID:
            self._by_id(command)
            return
        if kind == "inject":
            self._channels.latest[0].put(command)
            return
        if kind in SETTINGS:
            self._settings[kind] = command
        if kind == "clear":
            for pid in self._generation:
                self._generation[pid] += 1
                self._row_starts[pid], self._row_bases[pid] = [], []
            # Held packets stay held, with their ids: their workers announce their rows in the emptied store.
        self._errors_said.clear()
        for commands in list(self._channels.latest.values()):
            commands.put(command)

    def _by_id(self, command: dict) -> None:
        data = command.get("data") or {}
        per_worker: dict[int, dict] = {}
        for ident in command.get("ids", ()):
            held = self._held.get(int(ident))
            if held is None:
                raise SessionError(f"no held packet has id {ident} (already released or expired)", "held")
            pid, local, _ = held
            routed = per_worker.setdefault(pid, {**command, "ids": [], "data": {}})
            routed["ids"].append(local)
            if str(ident) in data:
                routed["data"][str(local)] = data[str(ident)]
        for pid, routed in per_worker.items():
            # A worker that died meanwhile reads none: its packets are counted lost once its successor starts.
            if pid in self._commands:
                self._commands[pid].put(routed)


class SlotChannels:
    """What a WorkerPool gives the worker it starts in a slot (it asks each time): a pipe of that
    worker's own for what it sends, and a command queue of its own, WORKER_START and the settings
    first. A queue shared with a worker killed while it read would stay locked for its successor;
    a pipe shared with one killed while it wrote would hold a message that never ends."""

    def __init__(self, context, reports: WorkerPipes, layer: Layer, settings: Callable[[], list]):
        self._context, self._reports, self._layer, self._settings = context, reports, int(layer), settings
        self.latest: dict[int, object] = {}        # slot -> the command queue of its newest worker
        self._handed: dict[int, object] = {}       # slot -> the write end handed to the worker starting

    def __getitem__(self, slot: int) -> WorkerChannels:
        commands = self._context.Queue()
        commands.put({"type": WORKER_START, "settings": self._settings()})
        self.latest[slot] = commands
        self._handed[slot] = self._reports.open()
        return WorkerChannels(self._handed[slot], commands, self._layer, slot)

    def started(self, slot: int) -> None:
        """The worker of `slot` runs: its write end is its alone."""
        end = self._handed.pop(slot, None)
        if end is not None:
            end.close()
