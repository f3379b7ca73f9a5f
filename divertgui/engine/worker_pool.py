"""One handle's packets spread over worker processes, one NFQUEUE queue each.

    pool = WorkerPool(filter, work, workers=2, priority=0, flags=Flag(0), options=...)
    totals = pool.run(stop)       # until the threading.Event `stop` is set

`work(handle, stop, options) -> dict` is a module-level function; each worker
process calls it with a Divert handle of its own, already open, and `stop`
(a multiprocessing Event). The pool's one kernel rule is NFQUEUE
--queue-balance over the workers' consecutive queue numbers: netfilter picks
the queue by a hash of the packet's addresses and protocol, the same for
both directions, so a connection (indeed every flow between two hosts) stays
on one worker and per-flow order and per-flow rule state hold. Workers are
forked (divertgui.engine.fork_server), so they hold this process's
capabilities; ps names them divert-wSLOT (worker_name).

A worker that dies is started again on the same queue. Meanwhile its queue
has no reader: with Flag.FAIL_OPEN the kernel lets its packets pass
(--queue-bypass), otherwise it drops them; the packets the worker held when
it died (those in its queue, as the kernel counted them last) are counted as
lost. The totals sum the workers' counters, each worker's once (the last
report of a worker that died). Each worker reports on a pipe of its own
(divertgui.engine.worker_pipes): one killed partway through a message costs
the pool only that worker.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import multiprocessing
import os
import signal
import threading
import time

from divertgui.engine.address import Flag, Layer, Param
from divertgui.engine.collector_settings import set_for_packet_flow
from divertgui.engine.errors import NetfilterError, PrivilegeError, WorkerPoolError
from divertgui.engine.packet import Packet
from divertgui.engine.worker_pipes import Outbox, WorkerPipes

REPORT_PERIOD = 0.25    # seconds between a worker's counter reports and the pool's look at its queues
HITS_PERIOD = 1.0       # seconds between readings of the rule's packet counter, once a worker has died
START_TIMEOUT = 30.0    # seconds a worker has to open its handle
STOP_TIMEOUT = 15.0     # seconds a worker has to drain its queue and report after stop
PR_SET_NAME = 15


def worker_seed(seed: int, slot: int) -> int:
    """The seed of the rules in the worker of `slot`, drawn from the handle's `seed`: each worker's
    own, the same in every run with that seed."""
    digest = hashlib.blake2b(f"{seed}/worker {slot}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def worker_count(text: str) -> int:
    """`auto` (the cores this process may run on) or a whole number of workers."""
    if text == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return int(text)


class WorkerPool:
    def __init__(self, filter: str, work, workers: int, layer: Layer = Layer.NETWORK, priority: int = 0,
                 flags: Flag = Flag(0), queue_length: int | None = None, options=None, slot_options=None,
                 on_started=None):
        """`options` goes to every worker's `work`; `slot_options`, when given, instead: `slot_options[slot]`
        to the worker started in that slot, read again each time one is (re)started there. Then
        `on_started(slot)`, when given, once that worker runs (to close the pipe ends its options
        hand it, which must not stay open here)."""
        if workers < 1:
            raise WorkerPoolError(f"a pool needs at least 1 worker, not {workers}")
        if flags & (Flag.SNIFF | Flag.DROP | Flag.RECV_ONLY | Flag.SEND_ONLY):
            raise WorkerPoolError("workers divert packets: SNIFF, DROP, RECV_ONLY and SEND_ONLY handles have none")
        self.filter, self.work, self.workers = filter, work, workers
        self.layer, self.priority, self.flags = Layer(layer), priority, Flag(flags)
        self.queue_length, self.options = queue_length, options
        self.slot_options, self.on_started = slot_options, on_started
        from divertgui.engine import fork_server
        self._context = fork_server.context()
        self._stop = self._context.Event()
        self._reports = WorkerPipes(self._context)
        # The rules' ordinal among the handles of their priority, which the workers' verdicts carry.
        self._ordinal = self._context.Value("i", 0)
        self._processes: dict[int, multiprocessing.Process] = {}
        self._latest: dict[int, dict] = {}         # pid -> the worker's last counters
        self._results: dict[int, dict] = {}        # pid -> what work() returned
        self._finished: set[int] = set()
        self._queued: dict[int, int] = {}          # queue number -> packets in it, as last read
        self.restarted = 0
        self.lost = 0
        self.rules = None
        self.first_queue = 0
        self._hits = 0
        self._hits_at = 0.0

    # -- running --------------------------------------------------------------------

    def run(self, stop: threading.Event, on_ready=None) -> dict:
        """Runs the workers until `stop` is set; `on_ready()` is called once packets flow to them."""
        from divertgui.engine.backends import netfilter_rules
        self.first_queue = self._free_queues()
        try:
            for slot in range(self.workers):
                self._start(slot)
            self._wait_ready(set(self._processes.values()))
            self.rules = netfilter_rules.install(self._rules())
            self._ordinal.value = self.rules.ordinal
            if on_ready is not None:
                on_ready()
            try:
                while not stop.is_set():
                    stop.wait(REPORT_PERIOD)
                    self._collect()
                    self._look_at_queues()
                    self._restart_dead()
                    self._count_rule_hits()
            except KeyboardInterrupt:
                pass        # Ctrl+C stops a program without a handler of its own, counters intact
        finally:
            bypassed = self._finish()
        totals = self.totals()
        totals["bypassed" if self.flags & Flag.FAIL_OPEN else "dropped_without_worker"] = bypassed
        return totals

    def _start(self, slot: int) -> None:
        reports = self._reports.open()
        process = self._context.Process(
            target=_worker, name=f"divert worker {slot}", daemon=True,
            args=(slot, self.first_queue + slot, self.filter, int(self.layer), self.priority, int(self.flags),
                  self.queue_length, self.work, self.options if self.slot_options is None else self.slot_options[slot],
                  self._stop, reports, self._ordinal))
        try:
            process.start()
        finally:
            # Only the worker may hold its write end: when it dies, even partway through a message,
            # its pipe ends and the pool reads on.
            reports.close()
            if self.on_started is not None:
                self.on_started(slot)
        self._processes[slot] = process

    def _wait_ready(self, processes) -> None:
        waiting = {process.pid for process in processes}
        end = time.monotonic() + START_TIMEOUT
        while waiting and time.monotonic() < end:
            for kind, pid, payload in self._drain(0.1):
                if kind == "ready":
                    waiting.discard(pid)
                elif kind == "failed":
                    raise WorkerPoolError(f"a worker could not open its handle: {payload}")
            if any(not p.is_alive() and p.pid in waiting for p in processes):
                raise WorkerPoolError("a worker exited before its handle was open")
        if waiting:
            raise WorkerPoolError(f"{len(waiting)} workers did not open their handles within {START_TIMEOUT:.0f} s")

    def _drain(self, wait: float = 0.0):
        items = self._reports.receive(wait)
        for kind, pid, payload in items:
            if kind == "stats":
                self._latest[pid] = payload
            elif kind == "done":
                self._latest[pid] = payload["stats"]
                self._results[pid] = payload["result"]
                self._finished.add(pid)
        return items

    def _collect(self) -> None:
        self._drain()

    def _look_at_queues(self) -> None:
        from divertgui.engine.backends.nfqueue import PROC_QUEUES
        try:
            with open(PROC_QUEUES) as rows:
                for row in rows:
                    fields = row.split()
                    if fields and self.first_queue <= int(fields[0]) < self.first_queue + self.workers:
                        self._queued[int(fields[0])] = int(fields[2])
        except (OSError, ValueError, IndexError):
            pass

    def _restart_dead(self) -> None:
        for slot, process in list(self._processes.items()):
            if process.is_alive():
                continue
            self._drain()
            if process.pid in self._finished:
                continue
            # The kernel dropped what its queue held when the worker's socket closed.
            self.lost += self._queued.pop(self.first_queue + slot, 0)
            self.restarted += 1
            self._start(slot)
            try:
                self._wait_ready([self._processes[slot]])
            except WorkerPoolError:
                pass        # tried again at the next look

    def _count_rule_hits(self, now: bool = False) -> None:
        """The packets the pool's rule took so far, read (a rule dump per IP version) only once a worker
        has died, when they tell what passed or was dropped while it was away; a stop signal may
        remove the rule before _finish reads it, so the last reading stands."""
        from divertgui.engine.backends import netfilter_rules
        if self.rules is None or not (now or self.restarted and time.monotonic() - self._hits_at >= HITS_PERIOD):
            return
        self._hits_at = time.monotonic()
        with contextlib.suppress(NetfilterError, OSError):
            self._hits = max(self._hits, netfilter_rules.target_hits(self.rules))

    def _finish(self) -> int:
        """Stops diverting, lets the workers give what they hold its verdict, and collects their counters;
        the packets the rule took that no worker received (bypassed or dropped while one was missing)."""
        from divertgui.engine.backends import netfilter_rules
        if self.rules is not None:
            try:
                self._count_rule_hits(now=True)
            finally:
                netfilter_rules.remove(self.rules)
        hits = self._hits
        self._stop.set()
        end = time.monotonic() + STOP_TIMEOUT
        for process in self._processes.values():
            while process.is_alive() and time.monotonic() < end:
                self._drain(0.1)
            if process.is_alive():
                process.kill()
            process.join(1)
        self._drain()
        self._reports.close()
        if self.rules is not None:
            # The workers are gone and their queues with them: the tables go if no handle is left.
            with contextlib.suppress(NetfilterError, OSError):
                netfilter_rules.remove_unused_tables()
        totals = self.totals()
        if not hits:
            return 0
        return max(0, hits - totals.get("diverted", 0) - totals.get("overflowed", 0) - self.lost)

    def totals(self) -> dict:
        """Every worker's counters (and what its work returned) summed, each worker once. Any thread may
        ask while the pool runs: it reads copies of what the pool's thread updates."""
        total: dict = {}
        results = dict(self._results)
        for pid, stats in list(self._latest.items()):
            add_counters(total, stats)
            if pid in results:
                add_counters(total, results[pid])
        total["workers"] = self.workers
        total["workers_restarted"] = self.restarted
        total["lost_with_worker"] = self.lost
        return total

    def _free_queues(self) -> int:
        from divertgui.engine.backends.nfqueue import QUEUE_NUMBER_BASE, QUEUE_NUMBER_SPAN, queue_numbers_in_use
        used = queue_numbers_in_use()
        start = (os.getpid() * 31) % QUEUE_NUMBER_SPAN
        for i in range(QUEUE_NUMBER_SPAN - self.workers):
            first = QUEUE_NUMBER_BASE + (start + i) % (QUEUE_NUMBER_SPAN - self.workers)
            if not used & set(range(first, first + self.workers)):
                return first
        raise WorkerPoolError(f"no {self.workers} consecutive free NFQUEUE numbers")

    def _rules(self):
        from divertgui.engine.backends.netfilter_rules import HandleRules
        from divertgui.engine.filter import compile_filter
        from divertgui.engine.filter.kernel import kernel_test
        if self.layer == Layer.NETWORK_FORWARD:
            hooks = "F"
        else:
            hooks = ("P" if self.flags & Flag.FRAGMENTS else "I") + "O"
        compiled = compile_filter(self.filter, self.layer)
        kernel_match = None
        if self.filter.strip() != "true":
            tests = {(version, hook): kernel_test(compiled, version, hook) for version in (4, 6) for hook in hooks}
            kernel_match = lambda version, hook: tests[version, hook].match  # noqa: E731
        return HandleRules(os.getpid(), self.first_queue, self.priority, "divert", hooks, kernel_match,
                           balance=self.workers, bypass=bool(self.flags & Flag.FAIL_OPEN))


def worker_name(slot: int) -> str:
    """A worker's process name, short enough that the kernel's 15 bytes keep its whole number."""
    return f"divert-w{slot}"


def _name_process(name: str) -> None:
    """The name ps and /proc/PID/status show (at most 15 bytes). Through prctl: a process holding
    capabilities its user lacks cannot write its own /proc files, which are root's."""
    from divertgui.engine import privileges
    text = ctypes.create_string_buffer(name.encode()[:15])
    with contextlib.suppress(PrivilegeError, OSError):
        privileges.prctl(PR_SET_NAME, ctypes.addressof(text), 0)


def add_counters(total: dict, more: dict) -> None:
    for key, value in more.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, list, dict)):
            total.setdefault(key, value)
        elif isinstance(value, dict):
            add_counters(total.setdefault(key, {}), value)
        elif isinstance(value, list):
            mine = total.setdefault(key, [])
            for index, item in enumerate(value):
                if index < len(mine) and isinstance(item, dict):
                    add_counters(mine[index], item)
                elif index >= len(mine):
                    mine.append(dict(item) if isinstance(item, dict) else item)
        else:
            total[key] = total.get(key, 0) + value


def _worker(slot: int, queue: int, filter: str, layer: int, priority: int, flags: int, queue_length, work, options,
            stop, reports_end, ordinal) -> None:
    """A worker process: a handle bound to `queue`, `work` on it until `stop`, its counters reported
    on `reports_end`, the write end of its pipe."""
    set_for_packet_flow()
    from divertgui.engine.backends.nfqueue import NfqueueBackend
    from divertgui.engine.filter.kernel import kernel_test
    from divertgui.engine.handle import Divert
    # Ctrl+C and `kill -- -GROUP` reach the whole process group: the pool decides when its
    # workers stop, after removing its rule, so that what they hold gets its verdict.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _name_process(worker_name(slot))
    pid = os.getpid()
    reports = Outbox(reports_end)
    # The fork server is this worker's parent; the pool's process is the one whose end it watches.
    pool = multiprocessing.parent_process()
    try:
        backend = NfqueueBackend(kernel_prefilter=kernel_test, queue=queue)
        handle = Divert(filter, Layer(layer), priority, Flag(flags), backend=backend)
        if queue_length:
            handle.set_param(Param.QUEUE_LENGTH, queue_length)
        handle.open()
    except Exception as exc:
        reports.put(("failed", pid, str(exc)))
        return
    reports.put(("ready", pid, None))
    # Packets come once the pool's rules are in, which gives the ordinal this worker's verdicts carry.
    while not ordinal.value and not stop.is_set() and pool.is_alive():
        time.sleep(0.001)
    backend.join_pool(ordinal.value)
    done = threading.Event()

    def report() -> None:
        while not done.wait(REPORT_PERIOD):
            if not pool.is_alive():
                # The pool was killed: its rule, which without fail-open drops what it takes, goes
                # first, and nobody else would stop this worker.
                from divertgui.engine.backends import netfilter_rules
                with contextlib.suppress(Exception):
                    netfilter_rules.cleanup(dead_only=True)
                stop.set()
            reports.put(("stats", pid, handle.stats()))
    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        result = work(handle, stop, options) or {}
    finally:
        done.set()
        handle.close()
    reports.put(("done", pid, {"stats": handle.stats(), "result": result}))


# -- a per-packet handler in worker processes ---------------------------------------------

HANDLER_BATCH = 64
HANDLER_POLL = 0.1      # seconds a worker waits for packets before it looks at `stop` again


def run_workers(filter: str, handler, workers: int = 2, layer: Layer = Layer.NETWORK, priority: int = 0,
                flags: Flag = Flag(0), stop: threading.Event | None = None, duration: float | None = None,
                queue_length: int | None = None, on_ready=None) -> dict:
    """Runs `handler(packet)` on every packet `filter` diverts, in `workers` processes; the summed counters.

    `handler` returns the packet to send (edited or not), a list of packets to send
    (the packet and new ones to inject), or None to drop it. It must be picklable (a
    module-level function, or functools.partial of one): each worker process gets a copy.
    A handler that raises, or returns anything else, drops that packet; the worker counts
    it in `handler_failed` and keeps the first error's text in `handler_error`. Runs until
    `stop` is set, `duration` seconds have passed, or Ctrl+C.
    """
    stop = stop if stop is not None else threading.Event()
    timer = None
    if duration is not None:
        timer = threading.Timer(duration, stop.set)
        timer.daemon = True
        timer.start()
    pool = WorkerPool(filter, _handle_packets, workers, layer, priority, flags, queue_length, handler)
    try:
        return pool.run(stop, on_ready)
    finally:
        if timer is not None:
            timer.cancel()


def _handle_packets(handle, stop, handler) -> dict:
    """A worker's loop for run_workers; after `stop`, what is still queued gets its verdict too."""
    counts = {"handled": 0, "handler_dropped": 0, "handler_failed": 0}
    first_error = None
    while True:
        stopping = stop.is_set()
        batch = handle.recv_batch(HANDLER_BATCH, 0 if stopping else HANDLER_POLL)
        if not batch and stopping:
            break
        outgoing = []
        for packet in batch:
            counts["handled"] += 1
            try:
                result = _to_send(handler(packet))
            except Exception as exc:
                counts["handler_failed"] += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"
                handle.drop(packet)
                continue
            if not result:
                counts["handler_dropped"] += 1
                handle.drop(packet)
            outgoing.extend(result)
        if outgoing:
            handle.send_batch(outgoing)
    if first_error is not None:
        counts["handler_error"] = first_error
    return counts


def _to_send(result) -> list:
    """What a run_workers handler returned, as the packets to send."""
    if result is None:
        return []
    if isinstance(result, Packet):
        return [result]
    if isinstance(result, (list, tuple)) and all(isinstance(item, Packet) for item in result):
        return list(result)
    raise TypeError(f"the handler returned {type(result).__name__}, not a Packet, a list of Packets or None")
