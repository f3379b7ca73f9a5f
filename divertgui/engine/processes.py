"""The process behind a packet: a live table of local flows to the processes that own them.

A packet's 5-tuple (its direction says which side is local) is looked up in
a dict of flows already seen; a flow not seen before is looked up in the
kernel's socket tables (/proc/thread-self/net/{tcp,tcp6,udp,udp6}: the
sockets of the calling thread's network namespace, with their inodes) and
the inode in the open files of processes (/proc/PID/fd), once, for a whole
batch of new flows together. So flows that began before the capture get
their process too. `refresh()` forgets flows whose socket has closed and
flows not found, so a port used again later is looked up again.

Reads only what /proc shows the caller: without CAP_SYS_PTRACE (or being
the same user) the open files of other users' processes stay unreadable
and their flows unattributed.
"""

from __future__ import annotations

import os
import time
from typing import Iterable, NamedTuple, Sequence

IPPROTO_TCP, IPPROTO_UDP = 6, 17
_V4_MAPPED = bytes(10) + b"\xff\xff"
_ANY_V4 = _V4_MAPPED + bytes(4)
_ANY_V6 = bytes(16)
SOCKET_TABLES = ((IPPROTO_TCP, "tcp"), (IPPROTO_TCP, "tcp6"), (IPPROTO_UDP, "udp"), (IPPROTO_UDP, "udp6"))
NET_DIR = "/proc/thread-self/net"
REFRESH_SECONDS = 1.0
NO_PROCESS = 0
MAX_INDEX = 0xFFFF           # the store's process column is 16 bits wide


class Process(NamedTuple):
    pid: int
    name: str
    user: str

    def label(self) -> str:
        return f"{self.name} ({self.pid})"


class ProcessList:
    """The processes a capture store's rows name, by small index; index 0 is no process."""

    def __init__(self) -> None:
        self._entries: list[Process | None] = [None]
        self._index: dict[Process, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def intern(self, process: Process) -> int:
        """The index of `process`, a new one the first time; 0 once the store's column is full."""
        index = self._index.get(process)
        if index is None:
            if len(self._entries) > MAX_INDEX:
                return NO_PROCESS
            index = self._index[process] = len(self._entries)
            self._entries.append(process)
        return index

    def get(self, index: int) -> Process | None:
        """The process of an index; None for index 0 (or one out of range)."""
        return self._entries[index] if 0 < index < len(self._entries) else None

    def indexes_of_pid(self, pid: int) -> list[int]:
        return [i for i, p in enumerate(self._entries) if p is not None and p.pid == pid]


# A flow: (protocol, local address, local port, remote address, remote port), addresses as
# 16 bytes (IPv4 as IPv4-mapped IPv6).
FlowKey = tuple


def flow_key(raw: bytes, outbound: bool) -> FlowKey | None:
    """The local flow of a TCP or UDP packet; None for other packets and fragments."""
    if len(raw) < 20:
        return None
    version = raw[0] >> 4
    if version == 4:
        protocol = raw[9]
        at = (raw[0] & 0x0F) * 4
        if raw[6] & 0x3F or raw[7]:          # a fragment: the ports are in the first one only
            return None
        src, dst = _V4_MAPPED + raw[12:16], _V4_MAPPED + raw[16:20]
    elif version == 6 and len(raw) >= 40:
        protocol = raw[6]
        at = 40
        src, dst = raw[8:24], raw[24:40]
    else:
        return None
    if protocol not in (IPPROTO_TCP, IPPROTO_UDP) or len(raw) < at + 4:
        return None
    sport, dport = raw[at] << 8 | raw[at + 1], raw[at + 2] << 8 | raw[at + 3]
    if outbound:
        return protocol, src, sport, dst, dport
    return protocol, dst, dport, src, sport


def _address(hex_text: str) -> bytes:
    """A /proc/net address: 32-bit words in the machine's byte order."""
    words = bytes.fromhex(hex_text)
    value = b"".join(words[i:i + 4][::-1] for i in range(0, len(words), 4)) if _LITTLE else words
    return _V4_MAPPED + value if len(value) == 4 else value


_LITTLE = __import__("sys").byteorder == "little"


class SocketTables(NamedTuple):
    """The namespace's sockets by what a packet can match: connected, bound to an address, bound to any."""

    connected: dict      # (protocol, local, lport, remote, rport) -> inode
    bound: dict          # (protocol, local, lport) -> inode
    wildcard: dict       # (protocol, lport, family 4 or 6) -> inode
    inodes: set


def read_socket_tables(net_dir: str = NET_DIR) -> SocketTables:
    tables = SocketTables({}, {}, {}, set())
    for protocol, name in SOCKET_TABLES:
        try:
            with open(f"{net_dir}/{name}", "rb") as f:
                lines = f.read().decode("ascii", "replace").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            inode = int(fields[9])
            if not inode:                    # TIME_WAIT and embryonic sockets belong to no process
                continue
            local_hex, lport_hex = fields[1].split(":")
            remote_hex, rport_hex = fields[2].split(":")
            local, lport = _address(local_hex), int(lport_hex, 16)
            remote, rport = _address(remote_hex), int(rport_hex, 16)
            tables.inodes.add(inode)
            if rport:
                tables.connected.setdefault((protocol, local, lport, remote, rport), inode)
            elif local in (_ANY_V4, _ANY_V6):
                tables.wildcard.setdefault((protocol, lport, 6 if name.endswith("6") else 4), inode)
            else:
                tables.bound.setdefault((protocol, local, lport), inode)
    return tables


def socket_inode(tables: SocketTables, key: FlowKey) -> int:
    """The inode of the socket a flow belongs to; 0 when none does."""
    protocol, local, lport, _remote, _rport = key
    inode = tables.connected.get(key) or tables.bound.get((protocol, local, lport))
    if inode:
        return inode
    if local.startswith(_V4_MAPPED):
        # A dual-stack IPv6 socket also receives IPv4.
        return tables.wildcard.get((protocol, lport, 4)) or tables.wildcard.get((protocol, lport, 6), 0)
    return tables.wildcard.get((protocol, lport, 6), 0)


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
        """Drops sockets no longer in the tables (inode numbers get used again)."""
        for inode in [i for i in self._owner if i not in live_inodes]:
            del self._owner[inode]
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


def describe(pid: int) -> Process:
    """A pid's name and user, as psutil knows them (empty when the process has gone)."""
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
        return Process(pid, "", "")
    return Process(pid, name, user)


class FlowOwners:
    """The process index (into `processes`) of each packet's local flow, kept fresh by `refresh`."""

    def __init__(self, processes: ProcessList, net_dir: str = NET_DIR, proc: str = "/proc") -> None:
        self.processes = processes
        self._net_dir = net_dir
        self._owners = SocketOwners(proc)
        self._flows: dict[FlowKey, tuple[int, int]] = {}      # flow -> (process index, socket inode)
        self._described: dict[int, int] = {}                  # pid -> process index
        self._next_refresh = 0.0
        self.lookups = 0                                      # batches that read the socket tables

    def indexes(self, raws: Sequence[bytes], outbound: Sequence[bool]) -> list[int]:
        """The process index of each packet (0 when it belongs to no local socket found)."""
        flows = self._flows
        keys = [flow_key(raw, out) for raw, out in zip(raws, outbound)]
        new = {key for key in keys if key is not None and key not in flows}
        if new:
            self._resolve(new)
        return [flows[key][0] if key is not None else NO_PROCESS for key in keys]

    def flow_count(self) -> int:
        return len(self._flows)

    def _resolve(self, keys: set) -> None:
        self.lookups += 1
        tables = read_socket_tables(self._net_dir)
        inodes = {key: socket_inode(tables, key) for key in keys}
        pids = self._owners.find({i for i in inodes.values() if i})
        for key, inode in inodes.items():
            pid = pids.get(inode)
            self._flows[key] = (self._index_of(pid) if pid is not None else NO_PROCESS, inode)

    def _index_of(self, pid: int) -> int:
        index = self._described.get(pid)
        if index is None:
            index = self._described[pid] = self.processes.intern(describe(pid))
        return index

    def refresh(self, now: float | None = None) -> None:
        """At most once per REFRESH_SECONDS: forget closed sockets' flows and flows not found."""
        now = time.monotonic() if now is None else now
        if now < self._next_refresh or not self._flows:
            return
        self._next_refresh = now + REFRESH_SECONDS
        tables = read_socket_tables(self._net_dir)
        live = tables.inodes
        self._flows = {k: v for k, v in self._flows.items() if v[1] in live}
        self._owners.forget(live)
        gone = {pid for pid in self._described if not os.path.exists(f"/proc/{pid}")}
        for pid in gone:
            del self._described[pid]
