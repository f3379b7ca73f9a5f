"""`divert list`, `watch` and `kill`: the machine's open divert handles, as windivertctl shows them.

All three read the handle registry (engine/backends/handle_registry.py);
`watch` is a REFLECT handle. `kill` stops a process the way its own signal
handling expects (SIGTERM: a divert command or service closes its handles
and removes their rules), and only a process that does not stop within
KILL_WAIT is killed outright, after which its rules are removed from its
network namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time

from divertgui.engine.address import Flag, Layer

KILL_WAIT = 5.0
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def command_line(pid: int) -> str:
    import psutil
    try:
        return " ".join(psutil.Process(pid).cmdline()) or f"[{psutil.Process(pid).name()}]"
    except psutil.Error:
        return "?"


def flags_text(flags: int) -> str:
    names = [flag.name for flag in Flag if flags & flag]
    return "|".join(names) if names else "0"


def handle_line(entry) -> str:
    return (f"{entry.pid:>7}  {entry.layer.name:<15} {entry.priority:>8}  {flags_text(entry.flags):<18} "
            f"{entry.filter!r}  {command_line(entry.pid)}")


HEADER = f"{'PID':>7}  {'LAYER':<15} {'PRIORITY':>8}  {'FLAGS':<18} FILTER  COMMAND"


def live_entries() -> list:
    from divertgui.engine.backends import handle_registry
    return [entry for entry in handle_registry.entries() if handle_registry.alive(entry)]


def print_handles(say) -> None:
    entries = live_entries()
    if not entries:
        say("no open divert handles on this machine")
        return
    say(HEADER)
    for entry in sorted(entries, key=lambda e: (e.pid, e.opened)):
        say(handle_line(entry))


def watch(say, stop, count: int | None = None, filter_text: str = "true") -> int:
    """Prints each handle opening and closing that `filter_text` selects, until `stop` is set
    or `count` events were seen."""
    from divertgui.engine.address import Event
    from divertgui.engine.backends import handle_registry
    from divertgui.engine.event_records import handle_filter_text
    from divertgui.engine.handle import Divert
    seen = 0
    with Divert(filter_text, Layer.REFLECT, flags=Flag.SNIFF | Flag.RECV_ONLY) as handle:
        while not stop and (count is None or seen < count):
            for packet in handle.recv_batch(64, 0.2):
                data = packet.address.reflect
                verb = "OPEN " if packet.address.event == Event.REFLECT_OPEN else "CLOSE"
                entry = handle_registry.Entry("", data.process_id, 0, data.layer, data.priority, data.flags,
                                              handle_filter_text(packet.raw, data.layer), data.timestamp)
                say(f"{verb} {handle_line(entry)}")
                seen += 1
    return seen


def kill(pids: list[int], say, wait: float = KILL_WAIT) -> list[int]:
    """Stops the processes; returns those that had to be killed outright."""
    namespaces = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            namespaces[pid] = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            say(f"sent SIGTERM to {pid} ({command_line(pid)})")
    survivors = _wait_for_exit(pids, wait)
    for pid in survivors:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            say(f"{pid} did not stop within {wait:g} s: sent SIGKILL")
    _wait_for_exit(survivors, wait)
    try:
        for pid in survivors:
            if pid in namespaces:
                _remove_rules_in(namespaces[pid], say)
    finally:
        for fd in namespaces.values():
            os.close(fd)
    from divertgui.engine.backends import handle_registry
    handle_registry.sweep()
    return survivors


def _wait_for_exit(pids: list[int], seconds: float) -> list[int]:
    from divertgui.engine.backends.handle_registry import process_start
    end = time.monotonic() + seconds
    left = [pid for pid in pids if process_start(pid) is not None]
    while left and time.monotonic() < end:
        time.sleep(0.05)
        left = [pid for pid in left if process_start(pid) is not None and not _zombie(pid)]
    return left


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            return stat_file.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return False


def _remove_rules_in(namespace_fd: int, say) -> None:
    """The rules of dead processes in that network namespace, removed from a thread that enters it."""
    import threading

    from divertgui.engine.backends import netfilter_rules
    result = {}

    def run() -> None:
        if _libc.setns(namespace_fd, CLONE_NEWNET) != 0:
            result["error"] = os.strerror(ctypes.get_errno())
            return
        result["removed"] = netfilter_rules.cleanup(dead_only=True)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    if "error" in result:
        say(f"cannot enter the killed process's network namespace to remove its rules: {result['error']}",
            sys.stderr)
    elif result["removed"]:
        say(f"removed {len(result['removed'])} chains it left")
