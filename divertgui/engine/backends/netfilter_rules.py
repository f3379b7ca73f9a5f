"""The kernel side of a handle: nf_tables chains of our own, one per handle
and hook, reached from a base chain per hook in which handles stand in
priority order (highest first). Two tables, `ip divertgui` and `ip6
divertgui` (the kernel refuses the x_tables target NFQUEUE and the bpf
match in an `inet` table), hold them; they exist while a handle does.

    prerouting (hook prerouting, priority -450) -> DG<pid>_<queue>_<level>s<n>P (FRAGMENTS)
    input      (hook input, priority -150)      -> DG<pid>_<queue>_<level>s<n>I -> NFQUEUE / log / drop
    output     (type route, hook output, -150)  -> DG<pid>_<queue>_<level>s<n>O
    forward    (hook forward, priority -150)    -> DG<pid>_<queue>_<level>s<n>F

The packet mark carries the priority level a packet has passed (bits 16-31):
a verdict re-runs the hook's base chain (NF_REPEAT) with the level of the
handle that released it, and every handle chain returns at once when the
level in the mark is its own or a higher one, so each packet meets the
handles in priority order and each level at most once. Packets a handle
injects carry its level too (see inject.py).

While a handle without FRAGMENTS can take inbound IPv6 packets, the ip6
table holds a chain `reassembly` whose conntrack expression turns on
conntrack's IPv6 defragmentation in the namespace, so that the handle sees
datagrams reassembled, as IPv4's are by then. FRAGMENTS handles hook
prerouting before that defragmentation (and IPv4's, when conntrack runs),
so they see fragments as they arrived.

Rules are made and read over nf_tables netlink (nftables.py): no program
is run. See driver/README.md for why these tables and this priority.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import errno
import fcntl
import grp
import logging
import os
import re
import signal
import stat
import threading
import time
from typing import NamedTuple

from divertgui.engine import privileges
from divertgui.engine.address import PRIORITY_MIN
from divertgui.engine.errors import NetfilterError, NetlinkError
from divertgui.engine.filter.kernel import KernelMatch, PacketMatch
from divertgui.engine.filter.kernel_native import NETWORK, TRANSPORT, Conjunction

from . import netlink, nftables as nft

_log = logging.getLogger(__name__)

TABLE = "divertgui"
# mangle's priority: before the machine's own filter rules (0) decide.
BASE_PRIORITY = -150
# FRAGMENTS: before conntrack's defragmentation (-400), as NF_IP_PRI_RAW_BEFORE_DEFRAG.
FRAGMENTS_PRIORITY = -450
LEVEL_SHIFT = 16
LEVEL_MASK = 0xFFFF0000
# Impostor: set by no handle of ours; a program that injects packets may set
# it (SO_MARK) to have handles see them as impostors.
INJECTED_MARK = 0x00000400
# Injected by one of our handles into the inbound path (through lo).
INBOUND_INJECTED_MARK = 0x00000800
# Handles may share a priority level (WinDivert: "handles should not share
# priority levels unless they use mutually exclusive filters"): each gets an
# ordinal in its level, 1..MAX_SHARING in the order they see packets, and a
# packet one of them rejects carries that ordinal here, so the handles after
# it at the same level still see it.
SUB_SHIFT = 12
SUB_MASK = 0x0000F000
MAX_SHARING = SUB_MASK >> SUB_SHIFT

HOOKS = {  # code letter: (base chain, netfilter hook, chain type, priority)
    "P": ("prerouting", netlink.NF_INET_PRE_ROUTING, "filter", FRAGMENTS_PRIORITY),
    "I": ("input", netlink.NF_INET_LOCAL_IN, "filter", BASE_PRIORITY),
    # As iptables' mangle OUTPUT: a packet whose mark a verdict changed is routed again.
    "O": ("output", netlink.NF_INET_LOCAL_OUT, "route", BASE_PRIORITY),
    "F": ("forward", netlink.NF_INET_FORWARD, "filter", BASE_PRIORITY),
}
BASE_CHAINS = {name for name, *_rest in HOOKS.values()}
# Holds the rule whose conntrack expression has the kernel reassemble IPv6 before INPUT; never jumped to.
REASSEMBLY_CHAIN = "reassembly"
FAMILIES = nft.FAMILIES
# Rule changes of every divertgui process take turns by locking a file in
# this directory: root's, writable by no other user, so nobody else can put a
# file, a FIFO or a link in its place. The file is readable by root and the
# group divertgui only: whoever can open it can hold the lock.
LOCK_DIRECTORY = "/run/divertgui"
LOCK_FILE = "rules.lock"
LOCK_TIMEOUT = 10.0
LOCK_TIMEOUT_STOPPING = 1.0
LOCK_POLL = 0.02
# thread-self: a thread may have entered another network namespace than the process.
PROC_QUEUES = "/proc/thread-self/net/netfilter/nfnetlink_queue"
CHAIN_NAME = re.compile(r"^DG(?P<pid>\d+)_(?P<queue>\d+)_(?P<level>\d+)(?:s(?P<ordinal>\d+))?(?P<hook>[PIOF])$")
# What each part of a rule needs of the kernel, named when the kernel refuses the rule.
NEEDS_COMPAT = "nft_compat (CONFIG_NFT_COMPAT)"
NEEDS = {
    "NFQUEUE": f"{NEEDS_COMPAT} and the x_tables NFQUEUE target (CONFIG_NETFILTER_XT_TARGET_NFQUEUE) with "
               f"nfnetlink_queue (CONFIG_NETFILTER_NETLINK_QUEUE)",
    "log": "nft_log (CONFIG_NFT_LOG) with nfnetlink_log (CONFIG_NETFILTER_NETLINK_LOG)",
    "bpf": f"{NEEDS_COMPAT} and the x_tables bpf match (CONFIG_NETFILTER_XT_MATCH_BPF)",
    "fib": "nft_fib (CONFIG_NFT_FIB_IPV4, CONFIG_NFT_FIB_IPV6)",
    "conntrack": "nft_ct (CONFIG_NFT_CT) with IPv6 conntrack (CONFIG_NF_CONNTRACK, CONFIG_NF_DEFRAG_IPV6)",
    "tables": "nf_tables (CONFIG_NF_TABLES, CONFIG_NF_TABLES_IPV4, CONFIG_NF_TABLES_IPV6)",
}

def level_of(priority: int) -> int:
    """1 (lowest priority) .. 60001 (highest); 0 in the mark means 'no level passed'."""
    return priority - PRIORITY_MIN + 1


def level_mark(priority: int) -> int:
    return level_of(priority) << LEVEL_SHIFT


def mark_masked(mask: int, value: int, equal: bool = True) -> list[bytes]:
    """The packet mark & mask == value (!= with equal=False)."""
    return [nft.meta(nft.META_MARK), nft.bitwise_and(nft.HOST_U32.pack(mask)),
            nft.compare(nft.CMP_EQ if equal else nft.CMP_NEQ, nft.HOST_U32.pack(value))]


def mark_masked_between(mask: int, low: int, high: int) -> list[bytes]:
    """low <= the packet mark & mask <= high."""
    tests = [nft.meta(nft.META_MARK), nft.bitwise_and(nft.HOST_U32.pack(mask)), nft.to_big_endian_u32()]
    if low:
        tests.append(nft.compare(nft.CMP_GTE, nft.BE32.pack(low)))
    return tests + [nft.compare(nft.CMP_LTE, nft.BE32.pack(high))]


# Field values are big-endian in the packet and in the compared data, so cmp's byte-wise order is the numeric one.
CMP_OPS = {"==": nft.CMP_EQ, "!=": nft.CMP_NEQ, "<": nft.CMP_LT, "<=": nft.CMP_LTE, ">": nft.CMP_GT, ">=": nft.CMP_GTE}
PAYLOAD_BASES = {NETWORK: nft.PAYLOAD_NETWORK_HEADER, TRANSPORT: nft.PAYLOAD_TRANSPORT_HEADER}


def conjunction_tests(conjunction: Conjunction) -> list[bytes]:
    """The expressions of one native rule: the protocol the kernel found, then each field."""
    tests = []
    if conjunction.protocol is not None:
        tests += [nft.meta(nft.META_L4PROTO), nft.compare(nft.CMP_EQ, bytes([conjunction.protocol]))]
    for test in conjunction.tests:
        tests.append(nft.payload(PAYLOAD_BASES[test.base], test.offset, test.size))
        if test.mask is not None:
            tests.append(nft.bitwise_and(test.mask.to_bytes(test.size, "big")))
        tests.append(nft.compare(CMP_OPS[test.op], test.value.to_bytes(test.size, "big")))
    return tests


def packet_matches(match: PacketMatch) -> list[tuple[list[bytes], list[str]]]:
    """The rules that test a PacketMatch, as (expressions, what of the kernel they need): a packet
    the match accepts satisfies exactly one of them."""
    tests, needs = [], []
    if match.loopback is not None:
        tests += [nft.meta(nft.META_OIFNAME),
                  nft.compare(nft.CMP_EQ if match.loopback else nft.CMP_NEQ, nft.interface_name("lo"))]
    if match.program is not None:
        tests.append(nft.bpf_match(match.program))
        needs.append(NEEDS["bpf"])
    if match.native is not None:
        return [(tests + conjunction_tests(conjunction), needs) for conjunction in match.native]
    return [(tests, needs)]


@dataclasses.dataclass(frozen=True)
class Rule:
    """One rule of a handle chain: its expressions, and what of the kernel they need."""

    expressions: tuple[bytes, ...]
    needs: tuple[str, ...] = ()
    what: str = ""


@dataclasses.dataclass(frozen=True)
class HandleRules:
    """What a handle asks of the kernel."""

    pid: int
    queue: int              # NFQUEUE number, or NFLOG group when action == "sniff"
    priority: int
    action: str             # "divert", "sniff" or "drop"
    hooks: str              # letters of HOOKS
    kernel_match: KernelMatch | None = None
    ordinal: int = 1        # among the handles of this priority level, given by install()
    # Queues queue..queue+balance-1, the flow's addresses choosing one (a worker pool);
    # bypass: packets pass while a queue has no reader (else the kernel drops them).
    balance: int = 1
    bypass: bool = True

    def chain(self, hook: str) -> str:
        return f"DG{self.pid}_{self.queue}_{level_of(self.priority):05d}s{self.ordinal:02d}{hook}"

    def chains(self) -> list[str]:
        return [self.chain(hook) for hook in self.hooks]

    def _target(self) -> tuple[list[bytes], list[str]]:
        # Counted: target_hits() reads how many packets reached the queue, or were dropped
        # (a DROP handle receives nothing, so the kernel's count is the only one).
        if self.action == "divert":
            return [nft.counter(), nft.nfqueue_target(self.queue, self.balance, self.bypass)], [NEEDS["NFQUEUE"]]
        if self.action == "sniff":
            return [nft.log_to_group(self.queue, netlink.MAX_COPY)], [NEEDS["log"]]
        if self.action == "drop":
            return [nft.counter(), nft.verdict(nft.NF_DROP)], []
        raise ValueError(f"unknown handle action {self.action!r}")

    def jumps(self, hook: str, version: int) -> list[Rule]:
        """The rules of the hook's base chain that send packets to this handle's chain: only those the
        kernel match covers (none: no packet of this IP version), each packet by one rule at most, so
        that a packet the handle's filter cannot want costs a test or a few and no more."""
        match = PacketMatch()
        if self.kernel_match is not None:
            match = self.kernel_match(version, hook)
            if match is None:
                return []
        return [Rule((*tests, nft.verdict(nft.NFT_JUMP, self.chain(hook))), tuple(needs),
                     f"jump to {self.chain(hook)}") for tests, needs in packet_matches(match)]

    def needs_reassembly(self, version: int) -> bool:
        """Whether this handle takes inbound packets of this IP version that Linux reassembles only
        after the INPUT hook (IPv6, unless conntrack's defragmentation runs: reassembly_changes)."""
        return version == 6 and "I" in self.hooks and bool(self.jumps("I", version))

    def rules(self, hook: str) -> list[Rule]:
        """The rules that fill this handle's chain for one hook, in order; the packets that reach it
        are those its jump's match covers."""
        back = nft.verdict(nft.NFT_RETURN)
        rules = []
        if hook == "P":
            # FRAGMENTS: inbound packets are taken before reassembly, which
            # happens between PREROUTING and INPUT (IPv4), after INPUT (IPv6), or
            # at -400 in PREROUTING when conntrack runs: HOOKS puts this chain before it.
            rules.append(Rule((nft.destination_address_type(),
                               nft.compare(nft.CMP_NEQ, nft.HOST_U32.pack(nft.RTN_LOCAL)), back),
                              (NEEDS["fib"],), "fib daddr type != local return"))
        if hook in "IP":
            # Loopback packets are diverted once, on the outbound path; packets
            # injected into the inbound path arrive on lo too, and are kept.
            rules.append(Rule((nft.meta(nft.META_IIFNAME), nft.compare(nft.CMP_EQ, nft.interface_name("lo")),
                               *mark_masked(INBOUND_INJECTED_MARK, 0), back), (),
                              "iifname lo, mark & 0x800 == 0: return"))
        target, needs = self._target()
        needs = tuple(needs)
        # Most packets have passed no level yet: one rule takes them.
        unmarked = mark_masked(LEVEL_MASK, 0)
        rules.append(Rule((*unmarked, *target), needs, f"no level passed: {self.action}"))
        rules.append(Rule((*unmarked, back), (), "no level passed: return"))  # a log does not end the chain
        # This level first: a packet this handle has just released carries it.
        # Released or injected at this level (ordinal 0), or rejected by this
        # handle or one after it: passed. Rejected by one before it: not yet.
        level = level_of(self.priority)
        own = level << LEVEL_SHIFT
        rules.append(Rule((*mark_masked(LEVEL_MASK | SUB_MASK, own), back), (), "released at this level: return"))
        rules.append(Rule((*mark_masked_between(LEVEL_MASK | SUB_MASK, own | self.ordinal << SUB_SHIFT,
                                                own | SUB_MASK), back), (),
                          "rejected by this handle or a later one of its level: return"))
        # Then the lower levels, which a packet reaches only after this one
        # (level 0 returned above).
        if level > 1:
            rules.append(Rule((*mark_masked_between(LEVEL_MASK, 0, (level - 1) << LEVEL_SHIFT), back), (),
                              "released at a lower level: return"))
        rules.append(Rule(tuple(target), needs, f"released at a higher level: {self.action}"))
        return rules


@dataclasses.dataclass(frozen=True)
class InstalledChain:
    version: int
    name: str
    pid: int
    queue: int
    level: int
    hook: str
    ordinal: int = 0        # 0 for a chain named without one
    target: str = ""        # what it does with the packets it takes: "NFQUEUE", "log" or "drop"
    packets: int | None = None  # how many it took, as its rules' counters say; None when uncounted

    @property
    def priority(self) -> int:
        return self.level + PRIORITY_MIN - 1


_process_lock = threading.RLock()
_lock_depth = 0
_stopping = threading.Event()


def interrupt_lock_waits() -> None:
    """A stop signal arrived: waits for the rule lock end within LOCK_TIMEOUT_STOPPING."""
    _stopping.set()


@contextlib.contextmanager
def _namespace_lock():
    """Serialises the rule changes of all our processes.

    Re-entrant within the process, so that a signal handler removing rules
    while the interrupted code holds the lock does not wait for itself.
    """
    global _lock_depth
    with _process_lock:
        if _lock_depth:
            _lock_depth += 1
            try:
                yield
            finally:
                _lock_depth -= 1
            return
        fd = open_rule_lock()
        try:
            _wait_for_lock(fd)
            _lock_depth = 1
            try:
                yield
            finally:
                _lock_depth = 0
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _wait_for_lock(fd: int) -> None:
    """flock without blocking, retried until LOCK_TIMEOUT (LOCK_TIMEOUT_STOPPING once a stop signal came)."""
    deadline = time.monotonic() + LOCK_TIMEOUT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        now = time.monotonic()
        if _stopping.is_set():
            deadline = min(deadline, now + LOCK_TIMEOUT_STOPPING)
        if now >= deadline:
            raise NetfilterError(f"another process has held the rule lock {_lock_path()} for too long; "
                            f"`fuser -v {_lock_path()}` shows which")
        time.sleep(LOCK_POLL)


def open_lock_directory() -> int:
    """The lock directory, opened without following links or blocking; made (by root) when missing."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(LOCK_DIRECTORY, flags)
    except FileNotFoundError:
        if os.geteuid() != 0:
            raise NetfilterError(f"the lock directory {LOCK_DIRECTORY} does not exist: packaging/install-linux.sh "
                            f"has the system create it at boot, and any divert run as root creates it") from None
        with contextlib.suppress(FileExistsError):
            os.mkdir(LOCK_DIRECTORY, 0o755)
        fd = os.open(LOCK_DIRECTORY, flags)
    except OSError as exc:
        raise NetfilterError(f"cannot open the lock directory {LOCK_DIRECTORY}: {exc.strerror}") from exc
    info = os.fstat(fd)
    if info.st_uid != 0 or info.st_mode & stat.S_IWOTH:
        os.close(fd)
        raise NetfilterError(f"the lock directory {LOCK_DIRECTORY} must belong to root and be writable by no other "
                        f"user (it is uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):04o})")
    return fd


def _lock_path() -> str:
    return os.path.join(LOCK_DIRECTORY, LOCK_FILE)


def open_rule_lock() -> int:
    """The rule lock file, opened without following links or blocking; made (by root) when missing,
    readable by root and the group divertgui only, so that no other user can hold the lock."""
    directory = open_lock_directory()
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        try:
            fd = os.open(LOCK_FILE, flags, dir_fd=directory)
        except FileNotFoundError:
            if os.geteuid() != 0:
                raise NetfilterError(f"the rule lock {_lock_path()} does not exist: packaging/install-linux.sh "
                                     f"has the system create it at boot, and any divert run as root creates "
                                     f"it") from None
            _create_rule_lock(directory)
            fd = os.open(LOCK_FILE, flags, dir_fd=directory)
    except OSError as exc:
        raise NetfilterError(f"cannot open the rule lock {_lock_path()}: {exc.strerror}") from exc
    finally:
        os.close(directory)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != 0 or info.st_mode & (stat.S_IWOTH | stat.S_IROTH):
        os.close(fd)
        raise NetfilterError(f"the rule lock {_lock_path()} must be a file of root's that other users may "
                             f"neither read nor write (it is uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):04o})")
    return fd


def _create_rule_lock(directory: int) -> None:
    try:
        fd = os.open(LOCK_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=directory)
    except FileExistsError:
        return
    try:
        # Members of the group run the capture program as themselves; without the group (or the
        # right to give the file to it) the lock is root's alone.
        with contextlib.suppress(KeyError, PermissionError):
            os.fchown(fd, 0, grp.getgrnam(privileges.CAPTURE_GROUP).gr_gid)
            os.fchmod(fd, 0o640)
    finally:
        os.close(fd)


class _Table(NamedTuple):
    """What one of our tables holds, as a dump found it."""

    exists: bool
    chains: list[nft.DumpedChain]
    rules: list[nft.DumpedRule]

    def handle_chains(self, version: int) -> list[InstalledChain]:
        targets, counted = {}, {}
        for rule in self.rules:
            if rule.target is not None:
                targets[rule.chain] = rule.target
            if rule.packets is not None:
                counted[rule.chain] = counted.get(rule.chain, 0) + rule.packets
        found = []
        for chain in self.chains:
            m = CHAIN_NAME.match(chain.name)
            if m:
                found.append(InstalledChain(version, m.group(0), int(m["pid"]), int(m["queue"]), int(m["level"]),
                                            m["hook"], int(m["ordinal"] or 0), targets.get(chain.name, ""),
                                            counted.get(chain.name)))
        return found

    def jumps(self, base: str) -> list[nft.DumpedRule]:
        """The rules of a base chain that jump to a handle chain, in order."""
        return [rule for rule in self.rules if rule.chain == base and rule.jump is not None]


@contextlib.contextmanager
def _kernel():
    """An nf_tables socket; the kernel's refusals become NetfilterErrors that say what it lacks."""
    try:
        sock = nft.NftablesSocket()
    except PermissionError as exc:
        raise NetfilterError(f"changing netfilter rules needs CAP_NET_ADMIN: {exc.strerror}") from exc
    except OSError as exc:
        raise NetfilterError(f"the kernel has no netfilter netlink socket ({exc.strerror}): it needs "
                             f"{NEEDS['tables']}", NEEDS["tables"]) from exc
    try:
        yield sock
    except nft.NftablesError as exc:
        missing = ""
        if exc.errno in (errno.EOPNOTSUPP, errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT) or \
                exc.errno == errno.ENOENT and exc.batch_start:
            missing = NEEDS["tables"]
        elif exc.errno in (errno.ENOENT, errno.EOPNOTSUPP):
            missing = exc.needs
        if missing:
            raise NetfilterError(f"the kernel refused a rule ({exc.strerror}): it lacks {missing}; load the "
                                 f"modules or use a kernel built with them", missing) from exc
        raise NetfilterError(str(exc)) from exc
    except NetlinkError as exc:
        raise NetfilterError(f"reading netfilter rules failed: {exc.strerror or exc}") from exc
    finally:
        sock.close()


def _read(sock: nft.NftablesSocket, version: int) -> _Table:
    family = FAMILIES[version]
    exists = TABLE in sock.tables(family)
    if not exists:
        return _Table(False, [], [])
    return _Table(True, sock.chains(family, TABLE), sock.rules(family, TABLE))


def install(handle: HandleRules) -> HandleRules:
    """Installs the handle's chains; returns it with its ordinal in its priority level."""
    with _namespace_lock(), _kernel() as sock:
        tables = {version: _read(sock, version) for version in FAMILIES}
        handle = dataclasses.replace(handle, ordinal=_next_ordinal(tables, handle.priority))
        try:
            for version, table in tables.items():
                _apply_installing(sock, handle, version, table)
        except Exception:
            # Half a handle (IPv4 but not IPv6, say) is taken out again.
            for version in FAMILIES:
                with contextlib.suppress(Exception):
                    _remove_chains(sock, version, _read(sock, version), set(handle.chains()))
            with contextlib.suppress(Exception):
                remove_unused_tables()
            raise
    _track(handle)
    return handle


def _next_ordinal(tables: dict[int, _Table], priority: int) -> int:
    """One more than the ordinals of the handles already at this priority level."""
    level = level_of(priority)
    taken = [chain.ordinal for version, table in tables.items()
             for chain in table.handle_chains(version) if chain.level == level]
    ordinal = max(taken, default=0) + 1
    if ordinal > MAX_SHARING:
        raise NetfilterError(f"{len(set(taken))} handles or more already share priority {priority} in this network "
                             f"namespace (at most {MAX_SHARING} can); choose another priority")
    return ordinal


def reassembly_changes(family: int) -> list[nft.Change]:
    """The chain whose rule has the kernel reassemble IPv6 before the INPUT hook: Linux does it only
    after that hook unless conntrack's defragmentation (prerouting, priority -400) runs in the network
    namespace, which nft_ct turns on while a ct expression exists."""
    rule = Rule((nft.conntrack_state(),), (NEEDS["conntrack"],), "ct state (IPv6 reassembly before input)")
    return [nft.new_chain(family, TABLE, REASSEMBLY_CHAIN),
            nft.new_rule(family, TABLE, REASSEMBLY_CHAIN, list(rule.expressions),
                         what=f"add the rule '{rule.what}' to {REASSEMBLY_CHAIN}", needs=_needs(rule))]


def _apply_installing(sock: nft.NftablesSocket, handle: HandleRules, version: int, table: _Table) -> None:
    """Installs the handle's chains of one IP version. A kernel without IPv6 conntrack still gets
    the handle, without the reassembly chain: IPv6 fragments then reach it one by one (driver/README.md)."""
    try:
        sock.apply(_installing(handle, version, table))
    except nft.NftablesError as exc:
        if exc.needs != NEEDS["conntrack"]:
            raise
        _log.warning("the kernel refused IPv6 conntrack (%s): inbound IPv6 fragments reach handles without "
                     "FRAGMENTS one by one, and the datagram they make is not diverted", exc.strerror)
        sock.apply(_installing(handle, version, table, reassembly=False))


def _installing(handle: HandleRules, version: int, table: _Table, reassembly: bool = True) -> list[nft.Change]:
    family = FAMILIES[version]
    changes = [] if table.exists else [nft.new_table(family, TABLE)]
    declared = {chain.name for chain in table.chains}
    if reassembly and handle.needs_reassembly(version) and REASSEMBLY_CHAIN not in declared:
        changes += reassembly_changes(family)
    for hook in handle.hooks:
        base, number, kind, priority = HOOKS[hook]
        if base not in declared:
            changes.append(nft.new_chain(family, TABLE, base, (number, priority, kind)))
        chain = handle.chain(hook)
        changes.append(nft.new_chain(family, TABLE, chain))
        for rule in handle.rules(hook):
            changes.append(nft.new_rule(family, TABLE, chain, list(rule.expressions),
                                        what=f"add the rule '{rule.what}' to {chain}", needs=_needs(rule)))
        # Higher levels first; among equal levels, the older handle first.
        before = [rule for rule in table.jumps(base)
                  if (m := CHAIN_NAME.match(rule.jump)) and int(m["level"]) >= level_of(handle.priority)]
        for jump in handle.jumps(hook, version):
            changes.append(nft.new_rule(family, TABLE, base, list(jump.expressions),
                                        after=before[-1].handle if before else None, first=not before,
                                        what=f"add the {jump.what} to {base}", needs=_needs(jump)))
    return changes


def _needs(rule: Rule) -> str:
    """What the kernel must have for the rule, named by _kernel() when it refuses the rule."""
    return " and ".join(rule.needs)


def _remove_chains(sock: nft.NftablesSocket, version: int, table: _Table, names: set[str]) -> None:
    """Removes the named handle chains and the jumps to them. Base chains stay (see remove_unused_tables)."""
    family = FAMILIES[version]
    present = {chain.name for chain in table.chains}
    changes = [nft.delete_rule(family, TABLE, base, rule.handle)
               for base in sorted(BASE_CHAINS & present) for rule in table.jumps(base) if rule.jump in names]
    changes += [nft.delete_chain(family, TABLE, name) for name in sorted(names & present)]
    sock.apply(changes)


def queues_holding_packets() -> set[int]:
    """The NFQUEUE numbers of this network namespace with packets waiting for a verdict."""
    try:
        with open(PROC_QUEUES) as f:
            rows = [line.split() for line in f]
    except OSError:
        return set()
    return {int(row[0]) for row in rows if len(row) > 2 and int(row[2]) > 0}


def remove_unused_tables(dropping: frozenset[int] | set[int] = frozenset()) -> None:
    """Deletes our tables where they hold no handle chain, so that a machine with no handle open
    has no trace of us.

    Deleting a table unhooks its base chains, and when a hook goes the kernel drops every packet
    that any NFQUEUE of the namespace holds. So the tables stay while a queue holds packets (the
    next sweep takes them), unless those are only the queues in `dropping`, whose packets are
    dropped anyway. For the same reason a handle's removal leaves the base chains in place: it
    may still hold packets to release. The reassembly chain goes on the same terms once no handle
    needs it, since its going unhooks conntrack.
    """
    with _namespace_lock(), _kernel() as sock:
        if queues_holding_packets() - set(dropping):
            return
        for version, family in FAMILIES.items():
            table = _read(sock, version)
            if table.exists and not table.handle_chains(version):
                sock.apply([nft.delete_table(family, TABLE)])
            elif REASSEMBLY_CHAIN in {chain.name for chain in table.chains} and not table.jumps(HOOKS["I"][0]):
                sock.apply([nft.delete_chain(family, TABLE, REASSEMBLY_CHAIN)])


def remove(handle: HandleRules) -> None:
    """Takes the handle's chains out: no new packet reaches it, and what it holds can still be
    released (remove_unused_tables deletes the tables afterwards)."""
    mine = set(handle.chains())
    with _namespace_lock(), _kernel() as sock:
        for version in FAMILIES:
            table = _read(sock, version)
            if mine & {chain.name for chain in table.chains}:
                _remove_chains(sock, version, table, mine)
    _untrack(handle)


def target_hits(handle: HandleRules) -> int:
    """Packets that reached this handle's NFQUEUE or drop rules, IPv4 and IPv6 together: one
    rule dump per IP version."""
    mine = set(handle.chains())
    hits = 0
    with _kernel() as sock:
        for family in FAMILIES.values():
            hits += sum(rule.packets for rule in sock.rules(family, TABLE)
                        if rule.chain in mine and rule.packets is not None)
    return hits


def pid_owner(pid: int) -> int | None:
    """The user id of a running process, None when it is gone."""
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except FileNotFoundError:
        return None


def caller_may_touch(chain: InstalledChain) -> bool:
    """Whether the calling user may see and remove this chain: root may all; a user, those of
    its own processes and those left by processes that are gone."""
    uid = os.geteuid()
    if uid == 0:
        return True
    owner = pid_owner(chain.pid)
    return owner is None or owner == uid


def list_handles() -> list[InstalledChain]:
    """The chains of ours in this network namespace the caller may see (`caller_may_touch`), IPv4 and IPv6."""
    found = []
    with _kernel() as sock:
        for version in FAMILIES:
            found += [c for c in _read(sock, version).handle_chains(version) if caller_may_touch(c)]
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup(dead_only: bool = True) -> list[InstalledChain]:
    """Remove chains left by processes that are gone (or all the caller may remove: `caller_may_touch`);
    returns what went. A table of ours holding no handle chain goes too."""
    removed = []
    with _namespace_lock(), _kernel() as sock:
        for version in FAMILIES:
            table = _read(sock, version)
            doomed = [c for c in table.handle_chains(version)
                      if caller_may_touch(c) and (not dead_only or not pid_alive(c.pid))]
            if doomed:
                _remove_chains(sock, version, table, {c.name for c in doomed})
                removed += doomed
        remove_unused_tables()
    return removed


# -- removal when the process ends -------------------------------------------

_installed: dict[int, HandleRules] = {}
_installed_lock = threading.Lock()
_previous_handlers: dict[int, object] = {}
_exit_hook_installed = False


def _track(handle: HandleRules) -> None:
    with _installed_lock:
        _installed[id(handle)] = handle
    _install_signal_handlers()


def _untrack(handle: HandleRules) -> None:
    with _installed_lock:
        _installed.pop(id(handle), None)


def remove_all_installed(ending: bool = True) -> None:
    """This process's handles' rules go. When the process is `ending`, the tables go too if no other
    handle is left: what its own queues hold is dropped with it anyway. A process that goes on may
    still release what it holds, so its tables stay for its handles' close."""
    with _installed_lock:
        handles = [handle for handle in _installed.values() if handle.pid == os.getpid()]
    for handle in handles:
        with contextlib.suppress(Exception):
            remove(handle)
    if handles and ending:
        with contextlib.suppress(Exception):
            remove_unused_tables({handle.queue + i for handle in handles for i in range(handle.balance)})


def _on_signal(signum, frame):
    interrupt_lock_waits()
    previous = _previous_handlers.get(signum)
    remove_all_installed(ending=not callable(previous) and previous != signal.SIG_IGN)
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_IGN:
        return
    else:
        # Default disposition: die of the same signal, as the process would have.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _install_signal_handlers() -> None:
    global _exit_hook_installed
    if not _exit_hook_installed:
        atexit.register(remove_all_installed)
        _exit_hook_installed = True
    # Python lets only the main thread set signal handlers; a handle opened
    # on another thread first gets them with the next one opened on the main thread.
    if _previous_handlers or threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        _previous_handlers[signum] = signal.getsignal(signum)
        signal.signal(signum, _on_signal)
