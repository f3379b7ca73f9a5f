"""The kernel side of a handle: iptables/ip6tables chains of our own in the
mangle table, one per handle and hook, reached from one dispatcher chain per
hook in which handles stand in priority order (highest first).

    mangle INPUT   -> DIVERTGUI_IN  -> DG<pid>_<queue>_<level>s<n>I -> NFQUEUE / NFLOG / DROP
    mangle OUTPUT  -> DIVERTGUI_OUT -> DG<pid>_<queue>_<level>s<n>O
    mangle FORWARD -> DIVERTGUI_FWD -> DG<pid>_<queue>_<level>s<n>F
    mangle PREROUTING -> DIVERTGUI_PRE -> ...P   (FRAGMENTS: inbound, before reassembly)

The packet mark carries the priority level a packet has passed (bits 16-31):
a verdict re-runs the hook (NF_REPEAT) with the level of the handle that
released it, and every handle chain returns at once when the level in the
mark is its own or a higher one, so each packet meets the handles in
priority order and each level at most once. Packets a handle injects carry
its level too (see inject.py).

See driver/README.md for why iptables and why mangle.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import fcntl
import grp
import os
import re
import signal
import stat
import subprocess
import threading
import time
from typing import Callable, NamedTuple

from divertgui.engine import privileges
from divertgui.engine.address import PRIORITY_MIN
from divertgui.engine.errors import NetfilterError

TABLE = "mangle"
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

HOOKS = {  # code letter: (base chain, dispatcher chain)
    "P": ("PREROUTING", "DIVERTGUI_PRE"),
    "I": ("INPUT", "DIVERTGUI_IN"),
    "O": ("OUTPUT", "DIVERTGUI_OUT"),
    "F": ("FORWARD", "DIVERTGUI_FWD"),
}
TOOLS = {4: "iptables", 6: "ip6tables"}
# Programs are run from these directories only, never found through PATH,
# with this environment only: they run with CAP_NET_ADMIN.
TOOL_DIRECTORIES = ("/usr/sbin", "/sbin")
TOOL_ENVIRONMENT = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
# Rule changes of every divertgui process take turns by locking a file in
# this directory: root's, writable by no other user, so nobody else can put a
# file, a FIFO or a link in its place. The file is readable by root and the
# group divertgui only: whoever can open it can hold the lock.
LOCK_DIRECTORY = "/run/divertgui"
LOCK_FILE = "rules.lock"
LOCK_TIMEOUT = 10.0
LOCK_TIMEOUT_STOPPING = 1.0
LOCK_POLL = 0.02
CHAIN_NAME = re.compile(r"^DG(?P<pid>\d+)_(?P<queue>\d+)_(?P<level>\d+)(?:s(?P<ordinal>\d+))?(?P<hook>[PIOF])$")


class KernelTest(NamedTuple):
    """What the kernel tests of a filter for one IP version.

    match: iptables match arguments that cover every packet the filter
    accepts ("" = everything, None = nothing of that version); exact: the
    match accepts nothing else, so user space need not look again (a DROP
    handle then drops in the kernel alone).
    """

    match: str | None
    exact: bool


# For an IP version (4 or 6) and a hook letter, the iptables match arguments
# of the handle's rule (KernelTest.match).
KernelMatch = Callable[[int, str], "str | None"]


def level_of(priority: int) -> int:
    """1 (lowest priority) .. 60001 (highest); 0 in the mark means 'no level passed'."""
    return priority - PRIORITY_MIN + 1


def level_mark(priority: int) -> int:
    return level_of(priority) << LEVEL_SHIFT


def _field_range(low: int, high: int, shift: int, bits: int) -> list[tuple[int, int]]:
    """(value, mask) pairs on the mark whose union is 'the field of `bits` bits at `shift` is in low..high'."""
    pairs = []
    while low <= high:
        size = 1
        while low % (size * 2) == 0 and low + size * 2 - 1 <= high:
            size *= 2
        mask = (~(size - 1)) & ((1 << bits) - 1)
        pairs.append((low << shift, mask << shift))
        low += size
    return pairs


def passed_levels(level: int) -> list[tuple[int, int]]:
    """(value, mask) pairs on the mark whose union is 'level field in 1..level'.

    A packet whose field is there has passed (or was injected by) a handle of
    this priority or a higher one, so this handle lets it go by.
    """
    return _field_range(1, level, LEVEL_SHIFT, 16)


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

    def rules(self, hook: str, version: int) -> list[str]:
        """iptables-restore lines that fill this handle's chain for one hook."""
        chain = self.chain(hook)
        lines = []
        # Loopback packets are diverted once, on the outbound path; packets
        # injected into the inbound path arrive on lo too, and are kept.
        from_lo = f"-i lo -m mark ! --mark 0x{INBOUND_INJECTED_MARK:x}/0x{INBOUND_INJECTED_MARK:x} -j RETURN"
        if hook == "I":
            lines.append(f"-A {chain} {from_lo}")
        if hook == "P":
            # FRAGMENTS: inbound packets are taken before reassembly, which
            # happens between PREROUTING and INPUT.
            lines.append(f"-A {chain} -m addrtype ! --dst-type LOCAL -j RETURN")
            lines.append(f"-A {chain} {from_lo}")
        match = ""
        if self.kernel_match is not None:
            extra = self.kernel_match(version, hook)
            if extra is None:
                return lines
            match = extra + " " if extra else ""
        if self.action == "divert":
            queues = f"--queue-balance {self.queue}:{self.queue + self.balance - 1}" if self.balance > 1 \
                else f"--queue-num {self.queue}"
            target = f"-j NFQUEUE {queues}" + (" --queue-bypass" if self.bypass else "")
        elif self.action == "sniff":
            target = f"-j NFLOG --nflog-group {self.queue} --nflog-size 65535"
        elif self.action == "drop":
            target = "-j DROP"
        else:
            raise ValueError(f"unknown handle action {self.action!r}")
        # Most packets have passed no level yet: one rule takes them.
        unmarked = f"-m mark --mark 0x0/0x{LEVEL_MASK:x}"
        lines.append(f"-A {chain} {unmarked} {match}{target}")
        lines.append(f"-A {chain} {unmarked} -j RETURN")   # NFLOG does not end the chain
        # This level first: a packet this handle has just released carries it.
        # Released or injected at this level (ordinal 0), or rejected by this
        # handle or one after it: passed. Rejected by one before it: not yet.
        level = level_of(self.priority)
        own, both = level << LEVEL_SHIFT, LEVEL_MASK | SUB_MASK
        lines.append(f"-A {chain} -m mark --mark 0x{own:x}/0x{both:x} -j RETURN")
        lines += [f"-A {chain} -m mark --mark 0x{own | value:x}/0x{LEVEL_MASK | mask:x} -j RETURN"
                  for value, mask in _field_range(self.ordinal, MAX_SHARING, SUB_SHIFT, 4)]
        # Then the lower levels, which a packet reaches only after this one.
        lines += [f"-A {chain} -m mark --mark 0x{value:x}/0x{mask:x} -j RETURN"
                  for value, mask in reversed(passed_levels(level - 1))]
        lines.append(f"-A {chain} {match}{target}")
        return lines


@dataclasses.dataclass(frozen=True)
class InstalledChain:
    version: int
    name: str
    pid: int
    queue: int
    level: int
    hook: str
    ordinal: int = 0        # 0 for a chain named without one

    @property
    def priority(self) -> int:
        return self.level + PRIORITY_MIN - 1


def tool_path(name: str) -> str:
    """The absolute path of an iptables program in TOOL_DIRECTORIES."""
    for directory in TOOL_DIRECTORIES:
        path = os.path.join(directory, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise NetfilterError(f"{name} is not installed in {' or '.join(TOOL_DIRECTORIES)}; install Debian's iptables "
                    f"package (apt-get install iptables)")


def require_tools() -> None:
    for tool in ("iptables", "ip6tables", "iptables-restore", "ip6tables-restore"):
        tool_path(tool)


def _run(args: list[str], stdin: str | None = None) -> str:
    command = [tool_path(args[0]), *args[1:]]
    # Root's iptables holds what root's bounding set allows. A process given
    # its capabilities as file capabilities (not root) passes them on only
    # through the ambient set, raised in this thread for this one trusted
    # program and lowered again at once.
    handing_on = privileges.inherited_by_children() if os.geteuid() != 0 else contextlib.nullcontext()
    try:
        with handing_on:
            done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=30,
                                  env=TOOL_ENVIRONMENT, close_fds=True)
    except FileNotFoundError as exc:
        raise NetfilterError(f"{command[0]} is not installed; install Debian's iptables package") from exc
    if done.returncode != 0:
        said = done.stderr.strip() or done.stdout.strip()
        where = f" (input:\n{stdin})" if stdin else ""
        raise NetfilterError(f"{' '.join(args)} failed: {said}{where}", said)
    return done.stdout


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


def _listing(version: int) -> list[str]:
    return _run([TOOLS[version], "-w", "-t", TABLE, "-S"]).splitlines()


def _chains_in(lines: list[str], version: int) -> list[InstalledChain]:
    found = []
    for line in lines:
        if line.startswith("-N "):
            m = CHAIN_NAME.match(line[3:].strip())
            if m:
                found.append(InstalledChain(version, m.group(0), int(m["pid"]), int(m["queue"]), int(m["level"]),
                                            m["hook"], int(m["ordinal"] or 0)))
    return found


def _dispatcher_order(lines: list[str], dispatcher: str) -> list[str]:
    prefix = f"-A {dispatcher} -j "
    return [line[len(prefix):].strip() for line in lines if line.startswith(prefix)]


def _restore(version: int, lines: list[str]) -> None:
    if lines:
        _run([f"{TOOLS[version]}-restore", "-w", "--noflush"], "*mangle\n" + "\n".join(lines) + "\nCOMMIT\n")


def install(handle: HandleRules) -> HandleRules:
    """Installs the handle's chains; returns it with its ordinal in its priority level."""
    require_tools()
    with _namespace_lock():
        listings = {version: _listing(version) for version in (4, 6)}
        handle = dataclasses.replace(handle, ordinal=_next_ordinal(listings, handle.priority))
        try:
            _install_locked(handle, listings)
        except Exception:
            # Half a handle (IPv4 but not IPv6, say) is taken out again.
            with contextlib.suppress(Exception):
                remove(handle)
            raise
    _track(handle)
    return handle


def _next_ordinal(listings: dict[int, list[str]], priority: int) -> int:
    """One more than the ordinals of the handles already at this priority level."""
    level = level_of(priority)
    taken = [chain.ordinal for version, listing in listings.items()
             for chain in _chains_in(listing, version) if chain.level == level]
    ordinal = max(taken, default=0) + 1
    if ordinal > MAX_SHARING:
        raise NetfilterError(f"{len(set(taken))} handles or more already share priority {priority} in this network "
                        f"namespace (at most {MAX_SHARING} can); choose another priority")
    return ordinal


def _install_locked(handle: HandleRules, listings: dict[int, list[str]]) -> None:
    for version in (4, 6):
        listing = listings[version]
        declared = {line[3:].strip() for line in listing if line.startswith("-N ")}
        lines: list[str] = []
        for hook in handle.hooks:
            base, dispatcher = HOOKS[hook]
            if dispatcher not in declared:
                lines += [f":{dispatcher} - [0:0]", f"-I {base} 1 -j {dispatcher}"]
            chain = handle.chain(hook)
            lines.append(f":{chain} - [0:0]")
            lines += handle.rules(hook, version)
            # Higher levels first; among equal levels, the older handle first.
            order = _dispatcher_order(listing, dispatcher)
            position = 1 + sum(1 for name in order
                               if (m := CHAIN_NAME.match(name)) and int(m["level"]) >= level_of(handle.priority))
            lines.append(f"-I {dispatcher} {position} -j {chain}")
        _restore(version, lines)


def _remove_chains(version: int, listing: list[str], names: set[str]) -> None:
    unhook, delete = [], []
    for hook, (base, dispatcher) in HOOKS.items():
        for name in _dispatcher_order(listing, dispatcher):
            if name in names:
                unhook.append(f"-D {dispatcher} -j {name}")
    for name in names:
        unhook.append(f"-F {name}")
        delete.append(f"-X {name}")
    # Dispatchers that no longer send anywhere go too, so a machine with no
    # handle open has no trace of us.
    for hook, (base, dispatcher) in HOOKS.items():
        order = _dispatcher_order(listing, dispatcher)
        if any(line.strip() == f"-N {dispatcher}" for line in listing) and all(n in names for n in order):
            unhook += [f"-D {base} -j {dispatcher}", f"-F {dispatcher}"]
            delete.append(f"-X {dispatcher}")
    # iptables-nft refuses to delete a chain in the same transaction that
    # removes the last jump to it, hence two.
    _restore(version, unhook)
    _restore(version, delete)


def remove(handle: HandleRules) -> None:
    mine = set(handle.chains())
    with _namespace_lock():
        for version in (4, 6):
            listing = _listing(version)
            present = {c.name for c in _chains_in(listing, version)} & mine
            if present:
                _remove_chains(version, listing, present)
    _untrack(handle)


def queue_rule_hits(handle: HandleRules) -> int:
    """Packets that reached this handle's NFQUEUE rules, IPv4 and IPv6 together."""
    hits = 0
    for version in (4, 6):
        for chain in handle.chains():
            try:
                listing = _run([TOOLS[version], "-w", "-t", TABLE, "-L", chain, "-n", "-v", "-x"])
            except NetfilterError:
                continue
            for line in listing.splitlines():
                fields = line.split()
                if len(fields) > 2 and fields[2] == "NFQUEUE":
                    hits += int(fields[0])
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
    require_tools()
    found = []
    for version in (4, 6):
        found += [c for c in _chains_in(_listing(version), version) if caller_may_touch(c)]
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
    returns what went."""
    require_tools()
    removed = []
    with _namespace_lock():
        for version in (4, 6):
            listing = _listing(version)
            doomed = [c for c in _chains_in(listing, version)
                      if caller_may_touch(c) and (not dead_only or not pid_alive(c.pid))]
            if doomed:
                _remove_chains(version, listing, {c.name for c in doomed})
                removed += doomed
            elif not dead_only or not _chains_in(listing, version):
                _remove_chains(version, listing, set())
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


def remove_all_installed() -> None:
    with _installed_lock:
        handles = list(_installed.values())
    for handle in handles:
        if handle.pid == os.getpid():
            with contextlib.suppress(Exception):
                remove(handle)


def _on_signal(signum, frame):
    interrupt_lock_waits()
    remove_all_installed()
    previous = _previous_handlers.get(signum)
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
