"""The process behind a packet: a live table of local flows to the processes that own them.

A batch's plain IPv4 packets of flows already seen find their process all at
once (plain_flow_table.py); any other packet's 5-tuple (its direction says
which side is local) is looked up in a dict of flows already seen; a flow
not seen before is asked of the kernel's socket diagnostics (sock_diag.py:
the socket, in the network namespace of the thread that made the table)
and the socket's inode is asked of the kernel's record of which process
created it (the socket's cookie in backends/socket_creators.py, given one)
or else found among the open files of processes (/proc/PID/fd), once per
flow, for a whole batch of new flows together. So flows that began before
the capture get their process too. `refresh()` forgets flows whose socket has closed
and flows not found, so a port used again later is looked up again.

When FLOW or SOCKET events are watched, `learn()` takes each flow's process
from its event (FLOW ESTABLISHED, SOCKET ACCEPT) and forgets the flow a
refresh after its end (FLOW DELETED, SOCKET CLOSE) or after the events stop,
so that its packets still on their way keep their process; a batch with new flows first asks
for the events waiting (`poll_events`): a packet of a flow whose event has
arrived gets its process without a socket lookup.

/proc shows the caller only what it may see: without CAP_SYS_PTRACE (or
being the same user, holding every capability the process holds) the open
files of other processes stay unreadable, and their sockets created before
the record of creators began go unattributed.
"""

from __future__ import annotations

import os
import pwd
import threading
import time
from typing import Callable, Iterable, NamedTuple, Sequence

from divertgui.engine.address import Event

import numpy as np

from divertgui.engine.address_text import IPV4_MAPPED_PREFIX
from divertgui.engine.backends import exited_processes
from divertgui.engine.header_fields import IPPROTO_TCP, IPPROTO_UDP, IPV4, IPV4_FRAGMENT_BITS, IPV4_HEADER_LEN, IPV6, IPV6_HEADER_LEN, TCP
from divertgui.engine.plain_flow_table import NOT_FOUND, OUTBOUND_BIT, PLAIN_V4_WORD, PlainFlowTable, key_words
from divertgui.engine.sock_diag import SocketDiag

# Offsets read per packet, taken from the header table once.
_VERSION_SHIFT = IPV4["version"].shift
_V4_HDR_LEN_MASK, _V4_PROTOCOL, _V4_FRAGMENT = IPV4["hdr_len"].mask, IPV4["protocol"].offset, IPV4["frag_offset"].offset
_V4_SRC, _V4_DST = IPV4["src_addr"].span, IPV4["dst_addr"].span
_V6_NEXT_HDR = IPV6["next_hdr"].offset
_V6_SRC, _V6_DST = IPV6["src_addr"].span, IPV6["dst_addr"].span
# TCP's and UDP's ports lie alike: source then destination, two bytes each.
_SPORT, _DPORT = TCP["src_port"].offset, TCP["dst_port"].offset

REFRESH_SECONDS = 1.0
# Flows whose socket refresh() checks each time: a bounded cost, whatever the number of flows.
REFRESH_FLOWS = 256
NO_PROCESS = 0
LEARNED = -1                 # the socket inode of a flow learned from an event (its inode is not known)
# Events that begin a flow with a known local and remote end, and those that end flows.
_BEGIN = (Event.FLOW_ESTABLISHED, Event.SOCKET_ACCEPT)
_END = (Event.FLOW_DELETED, Event.SOCKET_CLOSE)
MAX_INDEX = 0xFFFF           # the store's process column is 16 bits wide


class Process(NamedTuple):
    pid: int
    name: str
    user: str

    def label(self) -> str:
        """`name (pid)`, as the Events view writes it: `?` for a name no one could read."""
        return f"{self.name or '?'} ({self.pid})"


class ProcessList:
    """The processes a capture store's rows name, by small index; index 0 is no process."""

    def __init__(self) -> None:
        self._entries: list[Process | None] = [None]
        self._index: dict[Process, int] = {}
        self._pids = np.zeros(1, np.int64)
        self._latest: dict[int, Process] = {}      # pid -> the last name it was given
        # Several capture services' readers name processes at once.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def intern(self, process: Process) -> int:
        """The index of `process`, a new one the first time; 0 once the store's column is full."""
        index = self._index.get(process)
        if index is None:
            with self._lock:
                index = self._index.get(process)
                if index is None:
                    if len(self._entries) > MAX_INDEX:
                        return NO_PROCESS
                    self._entries.append(process)
                    index = self._index[process] = len(self._entries) - 1
                    self._latest[process.pid] = process
        return index

    def get(self, index: int) -> Process | None:
        """The process of an index; None for index 0 (or one out of range)."""
        return self._entries[index] if 0 < index < len(self._entries) else None

    def pids(self) -> np.ndarray:
        """The pid of each index (0 for index 0), to look a whole process column up at once."""
        count = len(self._entries)
        if len(self._pids) != count:
            self._pids = np.fromiter((p.pid if p is not None else 0 for p in self._entries[:count]),
                                     np.int64, count)
        return self._pids

    def of_pid(self, pid: int) -> Process | None:
        """The process `pid` as last named (a process that ran another program has a new name)."""
        return self._latest.get(pid)

    def indexes_of_pid(self, pid: int) -> list[int]:
        return [i for i, p in enumerate(self._entries) if p is not None and p.pid == pid]


# A process is its pid on its host: pids of different machines are different processes.
PID_BITS = 32


def process_keys(processes: ProcessList, indexes: np.ndarray, hosts: np.ndarray) -> np.ndarray:
    """A key per row for its process on its host, from the store's process and host columns;
    0 for a row of no process."""
    indexes = np.asarray(indexes, np.int64)
    pids = processes.pids()[indexes]
    return np.where(indexes == 0, 0, np.asarray(hosts, np.int64) << PID_BITS | pids)


def key_pid(keys):
    """The pid of process keys (process_keys)."""
    return keys & ((1 << PID_BITS) - 1)


def key_host(keys):
    """The host index of process keys (process_keys)."""
    return keys >> PID_BITS


# A flow: (protocol, local address, local port, remote address, remote port), addresses as
# 16 bytes (IPv4 as IPv4-mapped IPv6).
FlowKey = tuple


def flow_key(raw: bytes, outbound: bool) -> FlowKey | None:
    """The local flow of a TCP or UDP packet; None for other packets and fragments."""
    if len(raw) < IPV4_HEADER_LEN:
        return None
    version = raw[0] >> _VERSION_SHIFT
    if version == 4:
        protocol = raw[_V4_PROTOCOL]
        at = (raw[0] & _V4_HDR_LEN_MASK) * 4
        if (raw[_V4_FRAGMENT] << 8 | raw[_V4_FRAGMENT + 1]) & IPV4_FRAGMENT_BITS:
            return None                       # a fragment: the ports are in the first one only
        src, dst = IPV4_MAPPED_PREFIX + raw[_V4_SRC], IPV4_MAPPED_PREFIX + raw[_V4_DST]
    elif version == 6 and len(raw) >= IPV6_HEADER_LEN:
        protocol = raw[_V6_NEXT_HDR]
        at = IPV6_HEADER_LEN
        src, dst = raw[_V6_SRC], raw[_V6_DST]
    else:
        return None
    if protocol not in (IPPROTO_TCP, IPPROTO_UDP) or len(raw) < at + 4:
        return None
    sport, dport = raw[at + _SPORT] << 8 | raw[at + _SPORT + 1], raw[at + _DPORT] << 8 | raw[at + _DPORT + 1]
    if outbound:
        return protocol, src, sport, dst, dport
    return protocol, dst, dport, src, sport


class SocketOwners:
    """Socket inode -> pid, from /proc/PID/fd; processes that owned sockets lately are looked at first."""

    def __init__(self, proc: str = "/proc") -> None:
        self._proc = proc
        self._owner: dict[int, int] = {}
        self._recent: dict[int, None] = {}       # pids, most recent last

    def find(self, inodes: Iterable[int]) -> dict[int, int]:
        wanted = {i for i in inodes if i not in self._owner}
        if wanted:
            for pid in self._candidates():
                for inode in self._sockets_of(pid):
                    self._owner[inode] = pid
                    wanted.discard(inode)
                if not wanted:
                    break
        found = {}
        for inode in inodes:
            pid = self._owner.get(inode)
            if pid is not None:
                found[inode] = pid
                self._recent.pop(pid, None)
                self._recent[pid] = None
        return found

    def forget(self, live_inodes: set) -> None:
        """Keeps only these sockets' owners (inode numbers get used again)."""
        self._owner = {i: pid for i, pid in self._owner.items() if i in live_inodes}
        while len(self._recent) > 256:
            del self._recent[next(iter(self._recent))]

    def _candidates(self) -> Iterable[int]:
        recent = list(reversed(self._recent))
        yield from recent
        seen = set(recent)
        try:
            pids = sorted((int(n) for n in os.listdir(self._proc) if n.isdigit()), reverse=True)
        except OSError:
            return
        # Newest processes first: a new flow is most often a new program's.
        yield from (pid for pid in pids if pid not in seen)

    def _sockets_of(self, pid: int) -> list[int]:
        directory = f"{self._proc}/{pid}/fd"
        inodes = []
        try:
            names = os.listdir(directory)
        except OSError:
            return inodes
        for name in names:
            try:
                target = os.readlink(f"{directory}/{name}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.append(int(target[8:-1]))
        return inodes


def describe(pid: int, exits=None) -> Process:
    """A pid's name and user, as psutil knows them; for a process that has exited, as `exits`
    (backends/exited_processes.py) saw its exit; else empty."""
    import psutil
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            name = process.name()
            try:
                user = process.username()
            except (KeyError, psutil.Error):
                user = str(process.uids().real)
    except psutil.Error:
        exited = _exited(exits, pid)
        return Process(pid, exited[0], user_name(exited[1])) if exited else Process(pid, "", "")
    return Process(pid, name, user)


def _exited(exits, pid: int) -> tuple[str, int] | None:
    if exits is None:
        return None
    try:
        return exits.find(pid)
    except OSError:
        return None


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


class FlowOwners:
    """The process index (into `processes`) of each packet's local flow, kept fresh by `refresh`.

    Made on the thread whose network namespace's sockets it looks up. `poll_events`, when
    given, is called before new flows are looked up, so that events waiting reach `learn`.
    `creators` (a SocketCreators) and `exits` (from exited_processes.acquire()) become the
    table's: close() closes and releases them."""

    def __init__(self, processes: ProcessList, proc: str = "/proc",
                 poll_events: Callable[[], None] | None = None, creators=None, exits=None) -> None:
        self.processes = processes
        self._poll_events = poll_events
        self._creators = creators                             # a SocketCreators, asked before /proc
        self._exits = exits                                   # an ExitedProcesses, for processes gone
        self._diag = SocketDiag()
        self._owners = SocketOwners(proc)
        self._flows: dict[FlowKey, tuple[int, int]] = {}      # flow -> (process index, socket inode)
        self._plain = PlainFlowTable()                        # plain IPv4 packets' flows -> process index
        self._described: dict[int, int] = {}                  # pid -> process index
        self._next_refresh = 0.0
        self._to_check: list[FlowKey] = []                    # flows refresh() has still to check
        self._learned: dict[int, list[FlowKey]] = {}          # endpoint id -> flows learned from its events
        self._ending: set[FlowKey] = set()                    # learned flows ended since the last refresh
        self._dying: set[FlowKey] = set()                     # ... and before it: forgotten at the next
        self.lookups = 0                                      # batches with flows asked of the kernel
        self.learned = 0                                      # flows whose process came from an event
        self.created = 0                                      # flows whose process came from the creators
        self.error = ""                                       # why a lookup failed, the first time

    def close(self) -> None:
        self._diag.close()
        if self._creators is not None:
            self._creators.close()
        if self._exits is not None:
            self._exits = None
            exited_processes.release()

    def indexes(self, raws: Sequence[bytes], outbound: Sequence[bool]) -> np.ndarray:
        """The process index of each packet (0 when it belongs to no local socket found)."""
        # IPv4 without options and not a fragment: the whole batch's known flows found at once.
        words = key_words(raws, outbound)
        found = self._plain.find(words)
        missing = np.flatnonzero(found == NOT_FOUND).tolist()
        if not missing:
            return found
        flows = self._flows
        keys = {i: flow_key(raws[i], outbound[i]) for i in missing}
        new = {key for key in keys.values() if key is not None and key not in flows}
        if new and self._poll_events is not None:
            self._poll_events()
            new = {key for key in new if key not in flows}
        if new:
            self._resolve(new)
        first = words[:, 0] & ~OUTBOUND_BIT
        for i, key in keys.items():
            if key is None:
                found[i] = NO_PROCESS
                continue
            found[i] = flows[key][0]
            if first[i] == PLAIN_V4_WORD:
                self._plain.add(*words[i].tolist(), int(found[i]))
        return found

    def flow_count(self) -> int:
        return len(self._flows)

    def learn(self, records: Iterable) -> None:
        """Flows begun and ended by FLOW and SOCKET events (event_records.EventRecord); those of
        an unknown process (pid 0) are left to the socket lookup."""
        for record in records:
            flow = record.flow
            if flow is None:
                continue
            if record.event in _END:
                self._forget(flow.endpoint, self._key(flow) if record.event == Event.FLOW_DELETED else None)
            elif record.event in _BEGIN and record.pid:
                key = self._key(flow)
                index = self._described.get(record.pid)
                if index is None:
                    process = Process(record.pid, record.process, record.user) if record.process \
                        else describe(record.pid, self._exits)
                    index = self._described[record.pid] = self.processes.intern(process)
                self._flows[key] = (index, LEARNED)
                self._learned.setdefault(flow.endpoint, []).append(key)
                self._ending.discard(key)
                self._dying.discard(key)
                self.learned += 1

    @staticmethod
    def _key(flow) -> FlowKey:
        return flow.protocol, flow.local.to_bytes(16, "big"), flow.local_port, flow.remote.to_bytes(16, "big"), \
            flow.remote_port

    def _forget(self, endpoint: int, key: FlowKey | None) -> None:
        """A flow's end (`key`), or with None every flow of the endpoint."""
        keys = self._learned.pop(endpoint, [])
        if key is not None and key in keys:
            keys.remove(key)
            if keys:
                self._learned[endpoint] = keys
            keys = [key]
        self._ending.update(keys)

    def stop_learning(self) -> None:
        """No more events will come: learned flows are forgotten soon, then looked up."""
        for endpoint in list(self._learned):
            self._forget(endpoint, None)

    def _socket(self, key: FlowKey) -> tuple[int, int]:
        """(inode, cookie) of the flow's socket; (0, 0) when none is found."""
        try:
            found = self._diag.lookup(*key)
        except OSError as exc:
            # Attribution is an extra: a failing lookup leaves the packet without a process, never lost.
            self.error = self.error or f"socket diagnostics: {exc}"
            return 0, 0
        return (found[0], found[2]) if found is not None else (0, 0)

    def _inode(self, key: FlowKey) -> int:
        return self._socket(key)[0]

    def _creator(self, cookie: int) -> tuple[int, str] | None:
        try:
            return self._creators.creator(cookie)
        except OSError as exc:
            self.error = self.error or f"the record of socket creators: {exc}"
            return None

    def _resolve(self, keys: set) -> None:
        self.lookups += 1
        sockets = {key: self._socket(key) for key in keys}
        created = {}
        if self._creators is not None:
            for key, (inode, cookie) in sockets.items():
                if inode and (creator := self._creator(cookie)) is not None:
                    created[key] = creator
            self.created += len(created)
        pids = self._owners.find({inode for key, (inode, _) in sockets.items() if inode and key not in created})
        for key, (inode, _cookie) in sockets.items():
            pid, name = created.get(key) or (pids.get(inode), "")
            self._flows[key] = (self._index_of(pid, name) if pid is not None else NO_PROCESS, inode)

    def _index_of(self, pid: int, name: str = "") -> int:
        """The index of a process; `name` (from the kernel's record) names one that has ended."""
        index = self._described.get(pid)
        if index is None:
            process = describe(pid, self._exits)
            if not process.name and name:
                process = Process(pid, name, "")
            index = self._described[pid] = self.processes.intern(process)
        return index

    def _read_exits(self) -> None:
        """Keeps the reports of exits moving, so that a burst of them finds room."""
        try:
            self._exits.drain()
        except OSError as exc:
            self.error = self.error or f"the kernel's reports of exits: {exc}"

    def _gone(self, key: FlowKey) -> bool:
        """A looked-up flow lasts while the same socket has it; a learned one until its end event."""
        inode = self._flows[key][1]
        return inode != LEARNED and self._inode(key) != inode

    def refresh(self, now: float | None = None) -> None:
        """At most once per REFRESH_SECONDS: forget flows not found, learned flows that ended
        before the last refresh, and of up to REFRESH_FLOWS looked-up ones (in turn) those
        whose socket closed or changed."""
        now = time.monotonic() if now is None else now
        if now < self._next_refresh:
            return
        if self._exits is not None:
            self._read_exits()
        if not self._flows:
            return
        self._next_refresh = now + REFRESH_SECONDS
        for key in self._dying:
            if self._flows.get(key, (0, 0))[1] == LEARNED:
                del self._flows[key]
        self._dying, self._ending = self._ending, set()
        if not self._to_check:
            self._to_check = list(self._flows)
        checked, self._to_check = self._to_check[-REFRESH_FLOWS:], self._to_check[:-REFRESH_FLOWS]
        gone = {key for key in checked if key in self._flows and self._gone(key)}
        self._flows = {key: value for key, value in self._flows.items() if value[1] and key not in gone}
        self._plain.clear()
        self._owners.forget({inode for _index, inode in self._flows.values()})
        self._learned = {endpoint: kept for endpoint, keys in self._learned.items()
                         if (kept := [key for key in keys if key in self._flows])}
        for pid in [pid for pid in self._described if not os.path.exists(f"/proc/{pid}")]:
            del self._described[pid]
