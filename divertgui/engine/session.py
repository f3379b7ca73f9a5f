"""The engine loop: source -> rules -> intercept -> store, driven by commands.

A Session runs on one worker thread (`run`). Other threads talk to it only
through `post(command)`; it answers only through `emit(event)`. Both are the
plain dicts of divertgui.engine.protocol, so the loop could as well run in
another process. Events are coalesced: at most one per EMIT_INTERVAL.
"""

from __future__ import annotations

import itertools
import queue
import sys
import threading
import time
from typing import Callable, NamedTuple

from divertgui.engine.address import Address, Flag, Layer
from divertgui.engine.backends import exited_processes
from divertgui.engine.errors import (CaptureFileError, EventCaptureError, PacketTooLargeError, RuleError,
                                     SessionError)
from divertgui.engine.header_fields import ip_version
from divertgui.engine.handle import IPV4_MAX_SIZE, IPV6_MAX_SIZE
from divertgui.engine.interface_names import in_this_namespace
from divertgui.engine.packet import Packet
from divertgui.engine.processes import FlowOwners
from divertgui.engine.pooled_capture import COMMANDS as POOLED_COMMANDS
from divertgui.engine.pooled_capture import SETTINGS as POOL_SETTINGS
from divertgui.engine.pooled_capture import WORKERS_ONLY
from divertgui.engine.protocol import event, worker_option
from divertgui.engine.rules import Lag, Pipeline
from divertgui.engine.rules.runner import drain_queued, send_out
from divertgui.engine.rules.seq_adjust import SeqAdjuster
from divertgui.engine.store import CaptureStore, Verdict
from divertgui.engine.tcp_split import split_tcp_segment

EMIT_INTERVAL = 1 / 30
RECV_TIMEOUT = 0.01
BATCH = 255
DEMO_RATE = 1000.0
SWITCH_INTERVAL = 0.0001
DROPS_PERIOD = 0.5          # seconds between readings of a drop-mode capture's count
DELAYS_PER_EVENT = 512      # lag delays sent to the charts per "rows" event, the newest
MAX_HELD = 10_000           # held packets; beyond, matching packets pass and are counted
MAX_HELD_BYTES = 64 << 20   # their bytes
EVENTS_PER_MESSAGE = 500    # FLOW, SOCKET and REFLECT events per "events" event
MAX_PENDING_EVENTS = 100_000   # events waiting to be sent; beyond, they are counted as events_lost
POST_POLL = 0.1             # seconds a post waiting for room looks again whether the loop is ending

_MODES = {"divert": Flag(0), "sniff": Flag.SNIFF, "drop": Flag.DROP}
_TURNS = ("held", "events", "rows")


class Held(NamedTuple):
    packet: object          # the handle's Packet, its verdict pending
    row: int
    since: float            # time.monotonic() when it was held
    process: int = 0        # its index in the store's process list


class Session:
    def __init__(self, emit: Callable[[dict], None], store: CaptureStore | None = None, *,
                 gui_in_process: bool = True, max_waiting_commands: int = 0) -> None:
        """`gui_in_process`: a GUI thread shares this interpreter, and the loop makes room for it.
        `max_waiting_commands`: how many posted commands may wait for the loop before `post` waits for
        room (0: no bound)."""
        self.emit = emit
        self.store = store if store is not None else CaptureStore()
        self.gui_in_process = gui_in_process
        self.rules: list[dict] = []
        self.pipeline = Pipeline()
        self._rules_version = 0
        self._delays_seen: dict[int, int] = {}      # a lag rule's delays deque -> delays already sent
        self._send_errors = 0
        self._commands: queue.Queue = queue.Queue(max_waiting_commands)
        self._posted = 0
        self._posted_lock = threading.Lock()
        self._carried = 0
        self._end_asked: str | None = None      # "forward" or "drop": end() was called
        self._finished = False                  # run() has returned
        self._handle = None
        self._backend = None
        self._pool = None                   # a PooledCapture: a live capture over worker processes
        self._stats_of_pool = None          # its counters once it stopped, until the next capture
        self._stats_of_handle = None        # the same of a capture on one handle
        self._settings: dict[str, dict] = {}    # the latest of each of POOL_SETTINGS, for new workers
        self._source = ""
        # The source's names of its interfaces, and the indexes the store has been told of.
        self._interface_name: Callable[[int], str | None] = in_this_namespace
        self._named: set[int] = set()
        self._mode = "divert"
        self._layer = Layer.NETWORK
        self._paused = False
        self._reason = ""
        self._ended = False
        self._intercept = None
        self._intercept_text = ""
        self._hold_seconds = 0.0
        self._hold_action = "forward"
        self._held: dict[int, Held] = {}
        self._held_bytes = 0
        self._hold_pids: set[int] = set()     # every packet of these processes is held
        self._owners: FlowOwners | None = None
        self._owners_cgroup = ""            # whose sockets' creators a live capture records (start's cgroup)
        self._owners_notice = ""            # why the running capture's packets may lack their process
        self._event_capture = None          # an EventCapture (start_events)
        self._event_records: list = []      # EventRecords not yet sent
        self._events_due = False
        self.max_held, self.max_held_bytes = MAX_HELD, MAX_HELD_BYTES
        self._next_id = 1
        self._wall_offset = 0
        self._counts = dict.fromkeys(("forwarded", "modified", "user_dropped", "hold_expired", "injected",
                                      "hold_refused", "resent_edited", "seq_adjusted", "send_failed",
                                      "events_lost"), 0)
        # TCP connections with a segment edited by hand: the rest of each is renumbered as it
        # leaves, and a retransmission of the edited segment leaves edited. Kept across captures,
        # since the connections outlive them.
        self._edited = SeqAdjuster()
        # Coalesced outgoing events.
        self._state_due = False
        self._rows_due = False
        self._newly_held: list[dict] = []
        self._released: list[int] = []
        self._errors: list[dict] = []
        self._last_emit = 0.0
        self._drops_read_at = -DROPS_PERIOD
        self._drops_seen = 0
        self._last_kind = ""

    @property
    def backend(self):
        """The backend of the running capture (the demo network, a replay), None when stopped or live."""
        return self._backend

    @property
    def hold_pids(self) -> frozenset[int]:
        """The processes whose every packet is held (set_hold_processes)."""
        return frozenset(self._hold_pids)

    @property
    def held(self) -> dict[int, int]:
        """Held packets: id -> store row."""
        if self._pool is not None:
            return self._pool.held
        return {ident: held.row for ident, held in list(self._held.items())}

    # -- the thread-safe side -------------------------------------------------------

    def post(self, command: dict) -> None:
        """Queue a command; the loop carries it out in order. Any thread but the loop's own may post:
        while a bounded queue is full, the poster waits for the room only the loop makes, so that
        whoever sends the commands goes no faster than they are carried out. A command posted once
        the loop is ending is not carried out and is counted in `commands_not_carried_out`."""
        with self._posted_lock:
            self._posted += 1
        while self._end_asked is None and not self._finished:
            try:
                self._commands.put(command, timeout=POST_POLL)
                return
            except queue.Full:
                continue

    def end(self, drop_held: bool = False) -> None:
        """End the loop ahead of the commands still waiting: held packets are released (dropped when
        `drop_held`), the source and the rules closed, then `run` returns. Any thread may call it, the
        loop's own or a signal handler too: it only sets a flag, and never waits."""
        self._end_asked = "drop" if drop_held else "forward"

    @property
    def commands_not_carried_out(self) -> int:
        """Commands posted but never carried out, the loop having ended before them."""
        return self._posted - self._carried

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> None:
        """Carry out commands and move packets until a "shutdown" command."""
        # A GUI thread calls into Python many times per repaint, and waits for
        # the interpreter lock at each call while this loop is busy: a short
        # switch interval keeps each of those waits short.
        switch_interval = sys.getswitchinterval()
        if self.gui_in_process:
            sys.setswitchinterval(min(switch_interval, SWITCH_INTERVAL))
        try:
            while not self._ended:
                idle = (self._handle is None or self._mode == "drop") and self._pool is None
                self._take_commands(wait=RECV_TIMEOUT if idle else 0)
                if self._ended:
                    break
                if self._pool is not None:
                    self._pump_pool()
                if self._handle is not None and self._mode != "drop":
                    self._pump()
                    if self.gui_in_process:
                        # Hand the interpreter to the GUI thread between batches, not
                        # only when the switch interval forces it.
                        time.sleep(0)
                elif self._handle is not None:
                    self._watch_drops()
                if self._event_capture is not None:
                    self._poll_events()
                self._expire_holds()
                self._flush()
        finally:
            self._finished = True
            self._close_source("the session ended")
            self._close_events()
            self._flush(force=True)
            sys.setswitchinterval(switch_interval)

    def _watch_drops(self) -> None:
        """A drop-mode capture receives no packet, so no row says that its rule is dropping:
        its handle's count is read every DROPS_PERIOD and a change is sent with the rows."""
        now = time.monotonic()
        if now - self._drops_read_at < DROPS_PERIOD:
            return
        self._drops_read_at = now
        dropped = self._handle.stats().get("dropped", 0)
        if dropped != self._drops_seen:
            self._drops_seen = dropped
            self._rows_due = True

    def _take_commands(self, wait: float) -> None:
        while not self._ended:
            if self._end_asked is not None:
                if self._end_asked == "drop":
                    self._carry_out({"type": "drop_all"})
                self._ended = True
                return
            try:
                command = self._commands.get(timeout=wait) if wait else self._commands.get_nowait()
            except queue.Empty:
                return
            wait = 0
            self._carried += 1
            self._carry_out(command)

    def _carry_out(self, command: dict) -> None:
        kind = command.get("type") if isinstance(command, dict) else None
        handler = getattr(self, f"_on_{kind}", None) if isinstance(kind, str) else None
        if handler is None:
            self._error(f"unknown session command {kind!r}", "command")
            return
        try:
            if self._pool is not None and kind in POOLED_COMMANDS:
                # Settings are checked (and said wrong) here once, then go to every worker.
                if kind not in WORKERS_ONLY:
                    handler(command)
                self._pool.carry_out(command)
            else:
                handler(command)
            if kind in POOL_SETTINGS:
                self._settings[kind] = command
        except SessionError as exc:
            self._error(str(exc), exc.where, exc.position)
        except (KeyError, ValueError, TypeError) as exc:
            self._error(f"bad {kind} command: {exc!r}", kind)
        except Exception as exc:   # a failing command must not end the loop
            self._error(f"{kind} failed: {exc}", kind)

    # -- moving packets -----------------------------------------------------------------

    def _pump_pool(self) -> None:
        if self._pool.pump(RECV_TIMEOUT):
            self._take_pool_news()
        if self._pool.failed:
            self._error(f"live capture stopped: {self._pool.failed}", "workers")
            self._close_source(f"live capture stopped: {self._pool.failed}")

    def _take_pool_news(self) -> None:
        held, released, errors = self._pool.news()
        self._newly_held.extend(held)
        self._released.extend(released)
        for message in errors:
            self._error(message, "workers")
        self._rows_due = True

    def _pump(self) -> None:
        timeout = RECV_TIMEOUT
        deadline = self.pipeline.next_deadline()
        if deadline is not None:
            # Wake for the next held packet rather than a poll later: that is the lag's precision.
            timeout = min(timeout, max(0.0, (deadline - time.monotonic_ns()) / 1e9))
        try:
            packets = self._handle.recv_batch(BATCH, timeout)
        except Exception as exc:   # a source failing must end that capture, not the session
            self._error(f"{self._source} capture stopped: {exc}", self._source)
            self._close_source(f"{self._source} capture stopped: {exc}")
            return
        try:
            out = self.apply_rules(packets)
            if out:
                self._process(out)
        except Exception as exc:   # one bad batch must not end the session
            self._error(f"a batch of {len(packets)} packets failed: {exc}", "session")
            return
        if (not packets and not out and self._backend is not None and self._backend.finished and not self._held
                and not self.pipeline.held()):
            self._close_source("the capture file has been replayed to its end")

    def apply_rules(self, packets: list) -> list:
        """The rules pipeline between the source and the intercept filter.

        Returns the held packets now due, then what goes on of `packets`;
        dropped and held ones stay with the rules, which count them. Called
        with no packets too, so that due packets leave on time. Sniffed
        copies pass untouched: delaying a copy changes nothing on the wire.
        """
        if self._mode == "sniff" or not self.pipeline.rules:
            return packets
        now = time.monotonic_ns()
        out = self.pipeline.due(now)
        if packets:
            out.extend(self.pipeline.process(packets, now))
            self._rows_due = True
        elif out:
            self._rows_due = True
        return out

    def _process(self, packets: list) -> None:
        sniffing = self._mode == "sniff"
        intercept = None if sniffing or self._paused else self._intercept
        release, verdicts, hold = [], [], []
        room, bytes_room = self.max_held - len(self._held), self.max_held_bytes - self._held_bytes
        # Copies and RSTs the rules created have no pending verdict: the list shows them injected.
        created = [] if sniffing or not self.pipeline.rules else [
            i for i, p in enumerate(packets) if not p.ticket]
        # The list shows each packet as its sender numbered it, before any renumbering.
        raws = [p.raw for p in packets]
        resent = {} if sniffing or not self._edited else self._resend_edited(packets)
        processes = self._processes_of(raws, packets)
        held_process = self._held_process_indexes() if not sniffing and not self._paused else ()
        for index, (packet, raw) in enumerate(zip(packets, raws)):
            if sniffing:
                verdicts.append(Verdict.SNIFFED)
            elif index in resent:
                verdicts.append(Verdict.PASSED)
                release.append(packet)
            elif (processes[index] in held_process
                    or intercept is not None and intercept.match(raw, packet.address)) \
                    and self._room_to_hold(room, bytes_room, len(raw)):
                room, bytes_room = room - 1, bytes_room - len(raw)
                verdicts.append(Verdict.HELD)
                hold.append(packet)
            else:
                verdicts.append(Verdict.PASSED)
                release.append(packet)
        if release:
            self._send(release)
        if self._paused:
            return
        for index in created:
            if verdicts[index] == Verdict.PASSED:
                verdicts[index] = Verdict.INJECTED
        addresses = [p.address for p in packets]
        self.name_interfaces(addresses)
        rows = self.store.append_batch(raws, addresses, verdicts,
                                       [p.address.timestamp + self._wall_offset for p in packets], processes)
        for index, sent in resent.items():
            if sent != raws[index]:
                self.store.set_edited(rows.start + index, sent)
        if hold:
            now = time.monotonic()
            for index, (packet, row) in enumerate(zip(packets, rows)):
                if verdicts[index] == Verdict.HELD:
                    self._hold(packet, row, now, processes[index])
        self._rows_due = True

    def name_interfaces(self, addresses: list) -> None:
        """Tells the store, once, the source's name of each interface these packets came on."""
        new = {address.if_idx for address in addresses} - self._named
        if new:
            self._named |= new
            names = {if_idx: name for if_idx in new if (name := self._interface_name(if_idx))}
            if names:
                self.store.name_interfaces(names)

    def _processes_of(self, raws: list, packets: list) -> list[int]:
        """Each packet's process index in the store; only live packets have local processes."""
        return self._processes_of_rows(raws, [p.address for p in packets])

    def _processes_of_rows(self, raws: list, addresses: list) -> list[int]:
        if self._owners is None:
            return [0] * len(raws)
        self._owners.refresh()
        return self._owners.indexes(raws, [address.outbound for address in addresses])

    def _held_process_indexes(self) -> set[int]:
        if not self._hold_pids:
            return set()
        return {i for pid in self._hold_pids for i in self.store.processes.indexes_of_pid(pid)}

    def _resend_edited(self, packets: list) -> dict[int, bytes]:
        """Retransmissions of segments edited by hand get the edited bytes again; their
        indexes, each with the bytes it now has. They are not held again: the edit was the verdict."""
        resent = {}
        for index, packet in enumerate(packets):
            if self._edited.resend(packet):
                resent[index] = packet.raw
        self._counts["resent_edited"] += len(resent)
        return resent

    def _send(self, packets: list) -> None:
        if self._edited:
            for packet in packets:
                if self._edited.renumber(packet):
                    self._counts["seq_adjusted"] += 1
        self._send_renumbered(packets)

    def _send_renumbered(self, packets: list) -> None:
        errors: list[str] = []
        failed: list[str] = []
        send_out(self._handle, packets, errors, failed)
        if failed:
            if not self._counts["send_failed"]:
                self._error(f"a packet could not be sent after the rules edited it and was dropped "
                            f"(counted as send_failed): {failed[0]}", "send")
            self._counts["send_failed"] += len(failed)
        if errors:
            # Said once; afterwards "send_errors" in the stats keeps counting, so that a
            # failing injection cannot crowd every other event out.
            if not self._send_errors:
                self._error(f"a packet made by the rules could not be injected: {errors[0]}", "send")
            self._send_errors += len(errors)

    def _room_to_hold(self, room: int, bytes_room: int, size: int) -> bool:
        """Whether one more packet of `size` bytes may be held; said once when not."""
        if room > 0 and size <= bytes_room:
            return True
        if not self._counts["hold_refused"]:
            self._error(f"{len(self._held)} packets ({self._held_bytes} bytes) are held, the most this session "
                        f"holds ({self.max_held} packets, {self.max_held_bytes} bytes): further matching "
                        f"packets pass (counted as hold_refused)", "held")
        self._counts["hold_refused"] += 1
        return False

    def _hold(self, packet, row: int, since: float, process: int = 0) -> None:
        ident = self._next_id
        self._next_id += 1
        self._held[ident] = Held(packet, row, since, process)
        self._held_bytes += len(packet.raw)
        self._newly_held.append({"id": ident, "row": row})

    def _release(self, ident: int, data: bytes | None, drop: bool = False, fix: bool = False) -> None:
        if ident not in self._held:
            raise SessionError(f"no held packet has id {ident} (already released or expired)", "held")
        if data is not None and not drop:
            try:
                self._handle.check_size(data)
            except PacketTooLargeError as exc:
                # A TCP segment within IP's length goes out split (beyond it, the IP length field
                # could not say how much the edit added); anything else, as a failed WinDivertSend:
                # nothing happens to the packet, it waits for another verdict.
                if exc.limit in (IPV4_MAX_SIZE, IPV6_MAX_SIZE) or \
                        split_tcp_segment(data, self._handle.edited_size_limit(data)) is None:
                    raise SessionError(f"{exc}; it stays held: edit it again, forward it as it was, or drop it",
                                       "held") from exc
        held = self._held.pop(ident)
        self._held_bytes -= len(held.packet.raw)
        if drop:
            if held.packet.ticket:
                self._handle.drop(held.packet)
            self.store.set_verdict(held.row, Verdict.DROPPED)
            self._counts["user_dropped"] += 1
        else:
            packet, original = held.packet, held.packet.raw
            if data is not None:
                data = fix_lengths_and_checksums(data, packet.address) if fix else data
            retransmissions = []
            if data is not None and data != original:
                packet.raw = data
                self.store.set_edited(held.row, data)
                self._counts["modified"] += 1
                if self._edited.record_edit(Packet(original, packet.address), packet):
                    retransmissions = self._held_retransmissions()
                    self._check_answers_diverted(packet, original)
            elif self._edited and self._edited.resend(packet):
                self._counts["resent_edited"] += 1
                if packet.raw != original:
                    self.store.set_edited(held.row, packet.raw)
                else:
                    self.store.set_verdict(held.row, Verdict.PASSED)
            else:
                self.store.set_verdict(held.row, Verdict.PASSED)
            if self._edited and self._edited.renumber(packet):
                self._counts["seq_adjusted"] += 1
            self._counts["forwarded"] += 1
            # A segment too large for one verdict goes out split.
            self._send_renumbered([packet])
            # Copies of the segment the sender retransmitted while it was held follow it, edited.
            for other in retransmissions:
                self._release(other, None)
        self._released.append(ident)
        self._rows_due = True

    def _check_answers_diverted(self, packet, original: bytes) -> None:
        """Say so when a segment changed length but the capture filter does not take the packets
        coming back: their acknowledgements cannot be renumbered, and the connection stalls."""
        if len(Packet(original).payload or b"") == len(packet.payload or b""):
            return
        address = packet.address
        # WinDivert's directions: loopback and forwarded packets are outbound both ways.
        outbound = address.loopback or address.layer == Layer.NETWORK_FORWARD or not address.outbound
        answer = Packet(bytearray(packet.raw), address.copy(outbound=outbound))
        answer.src_addr, answer.dst_addr = packet.dst_addr, packet.src_addr
        answer.tcp.src_port, answer.tcp.dst_port = packet.tcp.dst_port, packet.tcp.src_port
        if not self._handle.filter.match(answer.raw, answer.address):
            self._error(f"the edited segment changed length, but the capture filter does not take the packets "
                        f"from {packet.dst_addr} port {packet.tcp.dst_port} back to {packet.src_addr} port "
                        f"{packet.tcp.src_port}: their acknowledgement numbers cannot be shifted to match, so "
                        f"the connection will stall; capture both directions (tcp.SrcPort == "
                        f"{packet.tcp.dst_port} or tcp.DstPort == {packet.tcp.dst_port})", "held")

    def _held_retransmissions(self) -> list[int]:
        """Held packets that are retransmissions of a segment edited by hand."""
        return [ident for ident, held in self._held.items()
                if self._edited.resend(Packet(held.packet.raw, held.packet.address))]

    def _expire_holds(self) -> None:
        if not self._held or self._hold_seconds <= 0:
            return
        limit = time.monotonic() - self._hold_seconds
        for ident in [i for i, h in self._held.items() if h.since <= limit]:
            self._counts["hold_expired"] += 1
            self._release(ident, None, drop=self._hold_action == "drop")

    # -- commands ---------------------------------------------------------------------------

    def _on_start(self, command: dict) -> None:
        source = command.get("source", "demo")
        mode = command.get("mode", "divert")
        if source not in ("demo", "live", "replay"):
            raise SessionError(f"unknown source {source!r}: use demo, live or replay", "source")
        if mode not in _MODES:
            raise SessionError(f"unknown mode {mode!r}: use divert, sniff or drop", "mode")
        layer_name = command.get("layer", "NETWORK")
        if layer_name not in ("NETWORK", "NETWORK_FORWARD"):
            raise SessionError(f"unknown layer {layer_name!r}: use NETWORK or NETWORK_FORWARD", "layer")
        try:
            workers = worker_option(command.get("workers", 1))
        except ValueError as exc:
            raise SessionError(str(exc), "workers") from exc
        if workers > 1 and (source != "live" or mode != "divert"):
            raise SessionError("workers apply to a live capture in divert mode: sniffing and dropping "
                               "handles read no packets to spread", "workers")
        self._close_source("")
        self._owners_cgroup = str(command.get("cgroup", "") or "")
        layer = Layer[layer_name]
        filter_text = command.get("filter", "true") or "true"
        priority = int(command.get("priority", 0))
        reason = ""
        if workers > 1:
            self._start_pool(filter_text, layer, priority, workers)
            return
        if source == "live":
            try:
                handle = self._open(filter_text, layer, priority, _MODES[mode], None)
                backend = None
            except SessionError:
                raise
            except Exception as exc:
                reason = demo_fallback_reason(_sentence(exc))
                source = "demo"
        if source == "demo":
            from divertgui.engine.backends.demo import DemoBackend
            backend = DemoBackend(seed=int(command.get("seed", 0)), rate=float(command.get("rate", DEMO_RATE)))
            handle = self._open(filter_text, layer, priority, _MODES[mode], backend)
        elif source == "replay":
            path = command.get("path")
            if not path:
                raise SessionError("replay needs the path of a capture file", "path")
            from divertgui.engine.backends.replay import ReplayBackend
            backend = ReplayBackend(path, float(command.get("speed", 1.0)), command.get("file"))
            handle = self._open(filter_text, layer, priority, _MODES[mode], backend)
        self._handle, self._backend = handle, backend
        self._begin(source, mode, layer, reason)

    def _begin(self, source: str, mode: str, layer: Layer, reason: str) -> None:
        self._forget_stopped_counts()
        # Created here, on the session's thread: it reads this thread's network namespace's sockets.
        self._owners = self._flow_owners() if source == "live" else None
        self._source, self._mode, self._layer, self._reason = source, mode, layer, reason
        # The demo network's and a replayed file's interfaces are theirs; a live capture's, this namespace's.
        self._name_interfaces_by(self._backend.interface_name if self._backend is not None else in_this_namespace)
        self._wall_offset = time.time_ns() - time.monotonic_ns()
        self._recompile_intercept()
        self._state_due = True

    def _name_interfaces_by(self, interface_name: Callable[[int], str | None]) -> None:
        self._interface_name, self._named = interface_name, set()

    def attach_live(self, handle, layer: Layer) -> None:
        """Capture, in divert mode, from `handle`, open already: a worker's queue of a pooled capture."""
        self._close_source("")
        self._forget_stopped_counts()
        self._handle, self._backend = handle, None
        self._source, self._mode, self._layer, self._reason = "live", "divert", layer, ""
        self._name_interfaces_by(in_this_namespace)
        self._wall_offset = time.time_ns() - time.monotonic_ns()
        self._recompile_intercept()
        self._state_due = True

    def _start_pool(self, filter_text: str, layer: Layer, priority: int, workers: int) -> None:
        from divertgui.engine.filter import FilterError, compile_filter
        from divertgui.engine.pooled_capture import PooledCapture
        try:
            compile_filter(filter_text, layer)
        except FilterError as exc:
            raise SessionError(f"capture filter: {exc.message}", "filter", exc.position) from exc
        self._begin("live", "divert", layer, "")
        self._pool = PooledCapture(self.store, filter_text, layer, priority, workers, list(self._settings.values()),
                                   self._processes_of_rows, self.name_interfaces)
        try:
            self._pool.start()
        except SessionError:
            self._pool = None
            self._close_owners()
            self._source, self._reason = "", "the capture workers could not start"
            raise

    def _flow_owners(self) -> FlowOwners | None:
        creators = exits = None
        if sys.platform.startswith("linux"):
            from divertgui.engine.backends.socket_creators import for_capture
            creators, self._owners_notice = for_capture(self._owners_cgroup)
            exits = exited_processes.acquire()
        try:
            return FlowOwners(self.store.processes, poll_events=self._poll_events_for_owners, creators=creators,
                              exits=exits)
        except OSError as exc:
            if creators is not None:
                creators.close()
            if exits is not None:
                exited_processes.release()
            self._error(f"packets get no process: the socket diagnostics cannot be asked ({exc})", "processes")
            return None

    def _open(self, filter_text: str, layer: Layer, priority: int, flags: Flag, backend):
        from divertgui.engine.filter import FilterError
        from divertgui.engine.handle import Divert
        try:
            handle = Divert(filter_text, layer, priority, flags, backend=backend)
        except FilterError as exc:
            raise SessionError(f"capture filter: {exc.message}", "filter", exc.position) from exc
        handle.open()
        return handle

    def _on_open(self, command: dict) -> None:
        from divertgui.engine.pcapng import CaptureReader
        from divertgui.engine.saved_capture import load_into
        path = command.get("path")
        if not path:
            raise SessionError("open needs the path of a capture file", "open")
        try:
            # A file that is not a capture leaves the capture as it was.
            reader = CaptureReader(command.get("file") or path, name=path)
        except CaptureFileError as exc:
            raise SessionError(str(exc), "open") from exc
        self._close_source("")
        self._forget_stopped_counts()
        loaded = load_into(self._fresh_store(), reader)
        self._queue_events(loaded.events)
        self._source = "file"
        malformed = f", {loaded.malformed:,} malformed" if loaded.malformed else ""
        skipped = sum(loaded.skipped.values())
        not_ip = f", {skipped:,} records not IP skipped" if skipped else ""
        events = f", {len(loaded.events):,} events" if loaded.events else ""
        self._reason = f"opened {path}: {loaded.count:,} packets{malformed}{not_ip}{events}"
        if loaded.bad_events:
            self._error(f"{path}: {len(loaded.bad_events)} event blocks could not be read and were left out "
                        f"(the first: {loaded.bad_events[0]})", "open")
        self._state_due = self._rows_due = True
        if loaded.error is not None:
            raise SessionError(str(loaded.error), "open")

    def _fresh_store(self) -> CaptureStore:
        """The store emptied; held packets were released before, so none come back."""
        self.store.clear()
        self._named = set()
        self._newly_held = []
        self._event_records = []
        self._last_kind = "held"
        return self.store

    def _forget_stopped_counts(self) -> None:
        self._stats_of_pool = self._stats_of_handle = None

    def _on_stop(self, command: dict) -> None:
        self._close_source("stopped")

    def _close_source(self, reason: str) -> None:
        if self._pool is not None:
            self._close_pool(reason)
            return
        if self._handle is None:
            return
        self._drain_source()
        self._release_rules()
        # Held packets continue unmodified rather than vanish with the handle.
        for ident in list(self._held):
            try:
                self._release(ident, None)
            except Exception as exc:
                self._error(f"held packet {ident} could not be released: {exc}", "held")
        try:
            self._handle.close()
        except Exception as exc:
            self._error(f"closing the {self._source} source failed: {exc}", self._source)
        # What it dropped and lost stays in view once it stopped.
        self._stats_of_handle = self._handle.stats()
        self._handle = self._backend = None
        self._close_owners()
        self._reason = reason
        self._state_due = self._rows_due = True

    def _close_pool(self, reason: str) -> None:
        """The workers forward what they hold (the hold policy of a closing capture) and end."""
        pool, self._pool = self._pool, None
        pool.close()
        news = pool.news()
        self._newly_held.extend(news[0])
        self._released.extend(news[1])
        for message in news[2]:
            self._error(message, "workers")
        self._stats_of_pool = pool.stats()
        self._close_owners()
        self._reason = reason
        self._state_due = self._rows_due = True

    def _close_owners(self) -> None:
        self._owners_notice = ""
        if self._owners is not None:
            if self._owners.error:
                self._error(f"some packets got no process: {self._owners.error}", "processes")
            self._owners.close()
            self._owners = None

    def _drain_source(self) -> None:
        """Packets still queued for the handle go through the rules and the intercept filter
        like any other: closing the handle would drop them."""
        if self._mode == "drop":
            return
        try:
            for packets in drain_queued(self._handle, BATCH):
                out = self.apply_rules(packets)
                if out:
                    self._process(out)
        except Exception as exc:
            self._error(f"packets still queued when the {self._source} source closed could not be "
                        f"released: {exc}", self._source)

    def _on_pause(self, command: dict) -> None:
        self._paused = bool(command.get("paused", True))
        self._state_due = True

    def _on_clear(self, command: dict) -> None:
        self.store.clear()
        self._named = set()
        self._event_records = []
        # Held packets stay held; they get rows in the emptied store (and are
        # announced once, with those rows).
        self._newly_held = [h for h in self._newly_held if h["id"] not in self._held]
        self.name_interfaces([held.packet.address for held in self._held.values()])
        for ident, held in list(self._held.items()):
            row = self.store.append_batch((held.packet.raw,), (held.packet.address,), Verdict.HELD,
                                          held.packet.address.timestamp + self._wall_offset,
                                          held.process).start
            self._held[ident] = held._replace(row=row)
            self._newly_held.append({"id": ident, "row": row})
        self._rows_due = True
        # The emptied store is announced before the held packets it holds again,
        # so a view that resets on the smaller count then sees them re-held.
        self._last_kind = "held"

    def _on_set_rate(self, command: dict) -> None:
        rate = float(command["rate"])
        if self._backend is None or not self._backend.paced:
            raise SessionError("the rate applies to the demo source only", "rate")
        self._backend.set_rate(rate)

    def _on_set_intercept(self, command: dict) -> None:
        self._intercept_text = (command.get("filter") or "").strip()
        self._recompile_intercept()

    def _recompile_intercept(self) -> None:
        text = self._intercept_text
        if text in ("", "false"):
            self._intercept = None
            return
        from divertgui.engine.filter import FilterError, compile_filter
        try:
            self._intercept = compile_filter(text, self._layer)
        except FilterError as exc:
            self._intercept = None
            raise SessionError(f"intercept filter: {exc.message}", "intercept", exc.position) from exc

    def _on_set_hold_processes(self, command: dict) -> None:
        """Hold every packet of these pids (besides what the intercept filter holds)."""
        self._hold_pids = {int(pid) for pid in command.get("pids", ())}

    def _on_set_hold_timeout(self, command: dict) -> None:
        seconds = float(command.get("seconds", 0))
        action = command.get("action", "forward")
        if seconds < 0 or action not in ("forward", "drop"):
            raise SessionError("hold timeout: seconds >= 0 and action forward or drop", "hold_timeout")
        self._hold_seconds, self._hold_action = seconds, action

    def _on_forward(self, command: dict) -> None:
        data = {int(k): v for k, v in (command.get("data") or {}).items()}
        for ident in command.get("ids", ()):
            ident = int(ident)
            hex_bytes = data.get(ident)
            self._release(ident, bytes.fromhex(hex_bytes) if hex_bytes else None,
                          fix=bool(command.get("fix", False)))

    def _on_forward_unmodified(self, command: dict) -> None:
        for ident in command.get("ids", ()):
            self._release(int(ident), None)

    def _on_drop(self, command: dict) -> None:
        for ident in command.get("ids", ()):
            self._release(int(ident), None, drop=True)

    def _on_forward_all(self, command: dict) -> None:
        for ident in list(self._held):
            self._release(ident, None)

    def _on_drop_all(self, command: dict) -> None:
        for ident in list(self._held):
            self._release(ident, None, drop=True)

    def _on_inject(self, command: dict) -> None:
        if self._handle is None:
            raise SessionError("nothing to inject into: start a capture first", "inject")
        raw = bytes.fromhex(command["data"])
        if ip_version(raw) not in (4, 6):
            raise SessionError("an injected packet must start with an IPv4 or IPv6 header", "inject")
        address = Address(outbound=bool(command.get("outbound", True)), ipv6=ip_version(raw) == 6,
                          if_idx=int(command.get("if_idx", 0)), timestamp=time.monotonic_ns(),
                          layer=self._layer)
        self._handle.send(Packet(raw, address))
        self._counts["injected"] += 1
        if not self._paused:
            self.store.append(raw, address, Verdict.INJECTED, address.timestamp + self._wall_offset)
            self._rows_due = True

    def _on_set_rules(self, command: dict) -> None:
        try:
            released = self.pipeline.update(command.get("rules", []), int(command.get("seed", 0)))
        except RuleError as exc:
            raise SessionError(str(exc), "rules", exc.position) from exc
        self._release_rules(released)
        self.rules = self.pipeline.to_dicts()
        self._rules_version = int(command.get("version", 0))
        self._rows_due = True

    def _release_rules(self, remaining: list | None = None) -> None:
        """Packets the rules held (by default all of them) go on now, through the intercept
        filter: nothing is lost."""
        if remaining is None:
            remaining = self.pipeline.release_all()
        if not remaining or self._handle is None:
            return
        try:
            self._process(remaining)
        except Exception as exc:
            self._error(f"{len(remaining)} packets held by the rules could not be released: {exc}", "rules")

    def _on_shutdown(self, command: dict) -> None:
        self._ended = True

    # -- FLOW, SOCKET and REFLECT events -------------------------------------------------------

    def _on_start_events(self, command: dict) -> None:
        from divertgui.engine.event_capture import EventCapture
        self._close_events()
        try:
            filters = {Layer[name]: text for name, text in command["layers"].items()}
            self._event_capture = EventCapture(filters, command.get("cgroup", "")).open()
        except EventCaptureError as exc:
            raise SessionError(str(exc), "events", exc.position) from exc
        finally:
            self._events_due = True

    def _on_stop_events(self, command: dict) -> None:
        self._close_events()

    def _poll_events(self) -> None:
        try:
            records = self._event_capture.poll()
        except Exception as exc:   # a failing event source ends that capture, not the session
            self._error(f"the event capture stopped: {exc}", "events")
            self._close_events()
            return
        if self._owners is not None:
            self._owners.learn(records)
        self._queue_events(records)

    def _poll_events_for_owners(self) -> None:
        """The events waiting, before new flows are looked up: their events may name their processes."""
        if self._event_capture is not None:
            self._poll_events()

    def _queue_events(self, records: list) -> None:
        room = MAX_PENDING_EVENTS - len(self._event_records)
        if len(records) > room:
            if not self._counts["events_lost"]:
                self._error(f"{MAX_PENDING_EVENTS} events wait to be sent, the most this session keeps: "
                            f"further events are counted as events_lost", "events")
            self._counts["events_lost"] += len(records) - max(room, 0)
            records = records[:max(room, 0)]
        if records:
            self._event_records.extend(records)
            self._events_due = True

    def _close_events(self) -> None:
        capture, self._event_capture = self._event_capture, None
        if capture is not None:
            capture.close()
            if self._owners is not None:
                self._owners.stop_learning()
            self._events_due = True

    def _events_event(self) -> dict:
        records = self._event_records[:EVENTS_PER_MESSAGE]
        del self._event_records[:EVENTS_PER_MESSAGE]
        self._events_due = bool(self._event_records)
        capture = self._event_capture
        return event("events", generation=self.store.generation, events=[record.to_json() for record in records],
                     capturing={layer.name: text for layer, text in capture.filters.items()} if capture else {},
                     cgroup=capture.cgroup if capture else "")

    # -- events -------------------------------------------------------------------------------

    def _error(self, message: str, where: str, position: int | None = None) -> None:
        fields = {"message": message, "where": where}
        if position is not None:
            fields["position"] = position
        self._errors.append(fields)

    def stats(self) -> dict:
        if self._pool is not None or self._stats_of_pool is not None:
            sessions, counts = self._pool.stats() if self._pool is not None else self._stats_of_pool
            # A handle's counter the workers' sessions count too (modified, injected) is theirs.
            counts = {**counts, **{k: v for k, v in sessions.items() if k in self._counts or k not in counts}}
            counts.update(packets=len(self.store), bytes=self.store.bytes_stored, held=len(self.held),
                          rules_version=self._rules_version)
            return counts
        counts = dict(self._handle.stats() if self._handle is not None else self._stats_of_handle or {})
        counts.update(self._counts)
        counts.update(packets=len(self.store), bytes=self.store.bytes_stored, held=len(self._held))
        rules = self.pipeline.stats()
        counts["rules"] = rules.pop("rules")
        counts["rules_total"] = rules
        counts["rules_version"] = self._rules_version
        counts["send_errors"] = self._send_errors
        return counts

    def new_delays(self) -> list[float]:
        """Delays (ms) the lag rules gave since the last call, the newest DELAYS_PER_EVENT at most."""
        delays: list[float] = []
        seen = {}
        for rule in self.pipeline.rules:
            if not isinstance(rule, Lag):
                continue
            # A lag rule records one delay per packet it matches.
            # Keyed by the deque, which a rule whose parameters change carries over.
            key = id(rule.recent_delays_ms)
            total = rule.counters["matched"]
            fresh = min(total - self._delays_seen.get(key, 0), len(rule.recent_delays_ms))
            seen[key] = total
            if fresh > 0:
                delays.extend(reversed(list(itertools.islice(reversed(rule.recent_delays_ms), fresh))))
        self._delays_seen = seen
        return [round(d, 3) for d in delays[-DELAYS_PER_EVENT:]]

    def _flush(self, force: bool = False) -> None:
        """Emit at most one event per EMIT_INTERVAL (every pending one when forced)."""
        now = time.monotonic()
        if not force and now - self._last_emit < EMIT_INTERVAL:
            return
        while True:
            message = self._next_event()
            if message is None:
                return
            self._last_emit = now
            self.emit(message)
            if not force:
                return

    def _next_event(self) -> dict | None:
        if self._errors:
            return event("error", **self._errors.pop(0))
        if self._state_due:
            self._state_due = False
            return event("state", running=self._handle is not None or self._pool is not None, paused=self._paused,
                         source=self._source, mode=self._mode, reason=self._reason, notice=self._owners_notice)
        due = {"held": bool(self._newly_held or self._released), "events": self._events_due,
               "rows": self._rows_due}
        # Held packets, events and rows take turns so that none starves the others.
        after = _TURNS.index(self._last_kind) + 1 if self._last_kind in _TURNS else 0
        kind = next((k for k in _TURNS[after:] + _TURNS[:after] if due[k]), None)
        if kind is None:
            return None
        self._last_kind = kind
        if kind == "held":
            message = event("held", held=self._newly_held, released=self._released)
            self._newly_held, self._released = [], []
            return message
        if kind == "events":
            return self._events_event()
        self._rows_due = False
        return event("rows", count=len(self.store), generation=self.store.generation,
                     stats=self.stats(), delays_ms=self.new_delays())


def demo_fallback_reason(problem: str) -> str:
    """What the session says when the demo network runs because live capture cannot."""
    return f"Live capture is not possible here ({problem.rstrip('.')}), so the demo network runs instead."


def _sentence(exc: Exception) -> str:
    return str(exc).strip().rstrip(".") or type(exc).__name__


def fix_lengths_and_checksums(raw: bytes, address: Address) -> bytes:
    """The packet with its IP and UDP lengths set to the bytes present, then every checksum."""
    packet = Packet(bytearray(raw), address.copy())
    packet.fix_lengths_and_checksums()
    return packet.raw
