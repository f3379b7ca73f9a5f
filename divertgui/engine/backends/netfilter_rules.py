"""The kernel side of a handle: iptables/ip6tables chains of our own in the
mangle table, one per handle and hook, reached from one dispatcher chain per
hook in which handles stand in priority order (highest first).

    mangle INPUT   -> DIVERTGUI_IN  -> DG<pid>_<queue>_<level>I -> NFQUEUE / NFLOG / DROP
    mangle OUTPUT  -> DIVERTGUI_OUT -> DG<pid>_<queue>_<level>O
    mangle FORWARD -> DIVERTGUI_FWD -> DG<pid>_<queue>_<level>F
    mangle PREROUTING -> DIVERTGUI_PRE -> ...P   (FRAGMENTS: inbound, before reassembly)

The packet mark carries the priority level a packet has passed (bits 16-31):
a verdict re-runs the hook (NF_REPEAT) with the level of the handle that
released it, and every handle chain returns at once when the level in the
mark is its own or a higher one, so each packet meets the handles in
priority order and each level at most once. Packets injected through a raw socket carry the level of the
injecting handle plus INJECTED_MARK, which lower handles report as impostor.

See driver/README.md for why iptables and why mangle.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import fcntl
import os
import re
import shutil
import signal
import subprocess
import threading
from typing import Callable, NamedTuple

from divertgui.engine import privileges
from divertgui.engine.address import PRIORITY_MIN

TABLE = "mangle"
LEVEL_SHIFT = 16
LEVEL_MASK = 0xFFFF0000
INJECTED_MARK = 0x00000400

HOOKS = {  # code letter: (base chain, dispatcher chain)
    "P": ("PREROUTING", "DIVERTGUI_PRE"),
    "I": ("INPUT", "DIVERTGUI_IN"),
    "O": ("OUTPUT", "DIVERTGUI_OUT"),
    "F": ("FORWARD", "DIVERTGUI_FWD"),
}
TOOLS = {4: "iptables", 6: "ip6tables"}
LOCK_DIRECTORY = "/run/lock"
CHAIN_NAME = re.compile(r"^DG(\d+)_(\d+)_(\d+)([PIOF])$")


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


class RuleError(RuntimeError):
    """iptables refused a change, or is not there; `stderr` is what it said."""

    def __init__(self, message: str, stderr: str = ""):
        super().__init__(message)
        self.stderr = stderr


def level_of(priority: int) -> int:
    """1 (lowest priority) .. 60001 (highest); 0 in the mark means 'no level passed'."""
    return priority - PRIORITY_MIN + 1


def level_mark(priority: int) -> int:
    return level_of(priority) << LEVEL_SHIFT


def passed_levels(level: int) -> list[tuple[int, int]]:
    """(value, mask) pairs on the mark whose union is 'level field in 1..level'.

    A packet whose field is there has passed (or was injected by) a handle of
    this priority or a higher one, so this handle lets it go by.
    """
    pairs = []
    low, high = 1, level
    while low <= high:
        size = 1
        while low % (size * 2) == 0 and low + size * 2 - 1 <= high:
            size *= 2
        mask = (~(size - 1)) & 0xFFFF
        pairs.append((low << LEVEL_SHIFT, mask << LEVEL_SHIFT))
        low += size
    return pairs


@dataclasses.dataclass(frozen=True)
class HandleRules:
    """What a handle asks of the kernel."""

    pid: int
    queue: int              # NFQUEUE number, or NFLOG group when action == "sniff"
    priority: int
    action: str             # "divert", "sniff" or "drop"
    hooks: str              # letters of HOOKS
    kernel_match: KernelMatch | None = None

    def chain(self, hook: str) -> str:
        return f"DG{self.pid}_{self.queue}_{level_of(self.priority):05d}{hook}"

    def chains(self) -> list[str]:
        return [self.chain(hook) for hook in self.hooks]

    def rules(self, hook: str, version: int) -> list[str]:
        """iptables-restore lines that fill this handle's chain for one hook."""
        chain = self.chain(hook)
        lines = []
        if hook == "I":
            # Loopback packets are diverted once, on the outbound path.
            lines.append(f"-A {chain} -i lo -j RETURN")
        if hook == "P":
            # FRAGMENTS: inbound packets are taken before reassembly, which
            # happens between PREROUTING and INPUT.
            lines.append(f"-A {chain} -m addrtype ! --dst-type LOCAL -j RETURN")
            lines.append(f"-A {chain} -i lo -j RETURN")
        match = ""
        if self.kernel_match is not None:
            extra = self.kernel_match(version, hook)
            if extra is None:
                return lines
            match = extra + " " if extra else ""
        if self.action == "divert":
            target = f"-j NFQUEUE --queue-num {self.queue} --queue-bypass"
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
        # Highest first: a packet this handle has just released carries its
        # own level, which the first of these rules then takes.
        lines += [f"-A {chain} -m mark --mark 0x{value:x}/0x{mask:x} -j RETURN"
                  for value, mask in reversed(passed_levels(level_of(self.priority)))]
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

    @property
    def priority(self) -> int:
        return self.level + PRIORITY_MIN - 1


def require_tools() -> None:
    for tool in ("iptables", "ip6tables", "iptables-restore", "ip6tables-restore"):
        if shutil.which(tool) is None:
            raise RuleError(f"{tool} is not installed; install Debian's iptables package "
                            f"(apt-get install iptables)")


def _run(args: list[str], stdin: str | None = None) -> str:
    try:
        # A process given its capabilities as file capabilities (not root)
        # passes them on to iptables only through the ambient set.
        with privileges.inherited_by_children():
            done = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=30)
    except FileNotFoundError as exc:
        raise RuleError(f"{args[0]} is not installed; install Debian's iptables package") from exc
    if done.returncode != 0:
        said = done.stderr.strip() or done.stdout.strip()
        where = f" (input:\n{stdin})" if stdin else ""
        raise RuleError(f"{' '.join(args)} failed: {said}{where}", said)
    return done.stdout


_process_lock = threading.RLock()
_lock_depth = 0


@contextlib.contextmanager
def _namespace_lock():
    """Serialises rule changes of all our processes in this network namespace.

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
        netns = os.stat("/proc/thread-self/ns/net").st_ino
        with _open_lock_file(f"{LOCK_DIRECTORY}/divertgui-netns-{netns}.lock") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _lock_depth = 1
            try:
                yield
            finally:
                _lock_depth = 0
                fcntl.flock(lock, fcntl.LOCK_UN)


def _open_lock_file(path: str):
    """The lock file, opened for reading: that is all flock needs.

    Processes of different users (root, or a user whose divertgui has file
    capabilities) share it, so it is never opened for writing, and never with
    O_CREAT when it exists: in a sticky world-writable directory the kernel
    (fs.protected_regular) refuses that on another user's file, even to root.
    """
    os.makedirs(LOCK_DIRECTORY, exist_ok=True)
    while True:
        try:
            try:
                return open(path, "rb")
            except FileNotFoundError:
                pass
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            # Readable by every user whatever the umask.
            os.fchmod(fd, 0o644)
            return os.fdopen(fd, "rb")
        except PermissionError as exc:
            raise RuleError(f"cannot open the lock file {path} ({exc.strerror}): it belongs to another "
                            f"user and is not readable by this one; remove it while no divertgui process runs") from exc


def _listing(version: int) -> list[str]:
    return _run([TOOLS[version], "-w", "-t", TABLE, "-S"]).splitlines()


def _chains_in(lines: list[str], version: int) -> list[InstalledChain]:
    found = []
    for line in lines:
        if line.startswith("-N "):
            m = CHAIN_NAME.match(line[3:].strip())
            if m:
                found.append(InstalledChain(version, m.group(0), int(m.group(1)), int(m.group(2)),
                                            int(m.group(3)), m.group(4)))
    return found


def _dispatcher_order(lines: list[str], dispatcher: str) -> list[str]:
    prefix = f"-A {dispatcher} -j "
    return [line[len(prefix):].strip() for line in lines if line.startswith(prefix)]


def _restore(version: int, lines: list[str]) -> None:
    if lines:
        _run([f"{TOOLS[version]}-restore", "-w", "--noflush"], "*mangle\n" + "\n".join(lines) + "\nCOMMIT\n")


def install(handle: HandleRules) -> None:
    require_tools()
    with _namespace_lock():
        try:
            _install_locked(handle)
        except Exception:
            # Half a handle (IPv4 but not IPv6, say) is taken out again.
            with contextlib.suppress(Exception):
                remove(handle)
            raise
    _track(handle)


def _install_locked(handle: HandleRules) -> None:
    for version in (4, 6):
        listing = _listing(version)
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
                               if (m := CHAIN_NAME.match(name)) and int(m.group(3)) >= level_of(handle.priority))
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
            except RuleError:
                continue
            for line in listing.splitlines():
                fields = line.split()
                if len(fields) > 2 and fields[2] == "NFQUEUE":
                    hits += int(fields[0])
    return hits


def list_handles() -> list[InstalledChain]:
    """Every chain of ours in this network namespace, IPv4 and IPv6."""
    require_tools()
    found = []
    for version in (4, 6):
        found += _chains_in(_listing(version), version)
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
    """Remove chains left by processes that are gone (or all of ours); returns what went."""
    require_tools()
    removed = []
    with _namespace_lock():
        for version in (4, 6):
            listing = _listing(version)
            doomed = [c for c in _chains_in(listing, version) if not dead_only or not pid_alive(c.pid)]
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
