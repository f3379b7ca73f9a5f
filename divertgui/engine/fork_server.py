"""Worker processes that hold what the program holds: forked, never exec'd.

The installed `divert` diverts through file capabilities (CAP_NET_ADMIN,
CAP_NET_RAW), which a process loses in whatever it exec()s; handing them on
through the ambient set would give them to every program started after.
multiprocessing starts its fork server and resource tracker by exec, so here
both are started by fork instead, early, while the program has one thread,
and every worker process is forked from that server: the same program with
the same capabilities, none of them ambient.

    fork_server.prepare()          # early: before the program starts threads
    context = fork_server.context()   # a multiprocessing context for worker processes

The server takes its requests on a socket pair of the program's own, not on
a named socket another process of the same user could reach to have code of
its choice run with the capabilities. Its standard input, output and error
are the program's at prepare(); every other descriptor is closed in it.
"""

from __future__ import annotations

import gc
import io
import os
import selectors
import signal
import socket
import sys
import threading
import traceback
from multiprocessing import context as mp_context
from multiprocessing import forkserver, popen_forkserver, process, resource_tracker, spawn, util
from multiprocessing.context import reduction, set_spawning_popen

# Imported before the server forks, so that workers start without reading them again (and
# where the program's files are unreadable to the user it runs as, without failing to).
WORKER_MODULES = ("divertgui.engine.worker_session", "divertgui.engine.session",
                  "divertgui.engine.backends.nfqueue", "divertgui.engine.backends.netfilter_rules",
                  "divertgui.engine.filter.kernel", "divertgui.engine.handle", "multiprocessing.queues",
                  "multiprocessing.synchronize", "multiprocessing.connection")
KEPT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD)

_lock = threading.Lock()
_servers: dict[tuple[int, int], "_Server"] = {}     # network namespace -> the server forked in it


def prepare() -> None:
    """Starts the resource tracker and the fork server now, unless they run already."""
    with _lock:
        _running_server()


def context() -> mp_context.BaseContext:
    """The multiprocessing context whose processes the fork server forks (started now if need be)."""
    prepare()
    return _CONTEXT


def _running_server() -> "_Server":
    """The server of the calling thread's network namespace, where the processes it forks capture:
    a program whose threads enter other namespaces (as tests do) has one in each."""
    info = os.stat("/proc/thread-self/ns/net")
    key = (info.st_dev, info.st_ino)
    server = _servers.get(key)
    if server is not None and server.alive():
        return server
    if server is not None:
        server.close()
    _start_tracker()
    server = _servers[key] = _Server()
    return server


def _start_tracker() -> None:
    tracker = resource_tracker._resource_tracker
    with tracker._lock:
        if tracker._fd is not None and tracker._check_alive():
            return
        if tracker._fd is not None:
            os.close(tracker._fd)
        read, write = os.pipe()
        tracker._pid = _fork(lambda: resource_tracker.main(read), keep=(read,))
        tracker._fd = write
        os.close(read)


def _fork(run, keep=()) -> int:
    """A child that keeps standard input, output, error and `keep`, runs `run()` and exits."""
    for name in WORKER_MODULES:
        __import__(name)
    gc.collect()   # a file object collected in the child would close a descriptor number reused there
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        _close_all_but((0, 1, 2, *keep))
        _servers.clear()
        run()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    except BaseException:
        code = 1
        traceback.print_exc()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _close_all_but(keep) -> None:
    start = 0
    for fd in sorted(set(keep)):
        if fd > start:      # an empty range would close every descriptor (close_range(start, -1))
            os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, os.sysconf("SC_OPEN_MAX"))


class _Server:
    """The service side of the fork server: its pid and the end of the request pair."""

    def __init__(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._send_lock = threading.Lock()
        self._null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self.pid = _fork(lambda: _serve(theirs), keep=(theirs.fileno(),))
        theirs.close()
        self.requests = ours

    def alive(self) -> bool:
        try:
            return os.waitpid(self.pid, os.WNOHANG) == (0, 0)
        except ChildProcessError:
            return False

    def close(self) -> None:
        self.requests.close()
        os.close(self._null)
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass

    def connect_to_new_process(self, fds: list[int]) -> tuple[int, int]:
        """As multiprocessing's fork server: (status read end, data write end) of a new child."""
        if len(fds) + 4 >= forkserver.MAXFDS_TO_SEND:
            raise ValueError("too many fds")
        parent_r, child_w = os.pipe()
        child_r, parent_w = os.pipe()
        try:
            # The alive descriptor the stdlib's children keep has no use here: /dev/null stands in.
            with self._send_lock:
                socket.send_fds(self.requests, [b"f"], [child_r, child_w, self._null,
                                                        resource_tracker.getfd(), *fds])
        except BaseException:
            os.close(parent_r)
            os.close(parent_w)
            raise
        finally:
            os.close(child_r)
            os.close(child_w)
        return parent_r, parent_w


def _serve(requests: socket.socket) -> None:
    """The fork server: a child for each request, its pid and then its exit status written back;
    ends when the program's end of the pair closes. Stop signals are the program's to act on."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    handlers = {signum: signal.getsignal(signum) for signum in KEPT_SIGNALS}
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    status_of: dict[int, int] = {}      # child pid -> the write end its status goes to
    with selectors.DefaultSelector() as selector:
        selector.register(requests, selectors.EVENT_READ)
        selector.register(wake_r, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                if key.fileobj is wake_r:
                    os.read(wake_r, 65536)
                    _reap(status_of)
                    continue
                message, fds, _, _ = socket.recv_fds(requests, 16, forkserver.MAXFDS_TO_SEND + 1)
                if not message:
                    return
                child_r, child_w, *inherited = fds
                pid = os.fork()
                if pid == 0:
                    code = 1
                    try:
                        requests.close()
                        selector.close()
                        code = forkserver._serve_one(child_r, inherited,
                                                     [wake_r, wake_w, child_w, *status_of.values()], handlers)
                    finally:
                        os._exit(code)
                try:
                    forkserver.write_signed(child_w, pid)
                except BrokenPipeError:
                    pass
                status_of[pid] = child_w
                os.close(child_r)
                for fd in inherited:
                    os.close(fd)


def _reap(status_of: dict[int, int]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        child_w = status_of.pop(pid, None)
        if child_w is not None:
            try:
                forkserver.write_signed(child_w, os.waitstatus_to_exitcode(status))
            except BrokenPipeError:
                pass
            os.close(child_w)


class _Popen(popen_forkserver.Popen):
    """multiprocessing's fork-server Popen, asking this module's server."""

    def _launch(self, process_obj):
        prep_data = spawn.get_preparation_data(process_obj._name)
        buf = io.BytesIO()
        set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            set_spawning_popen(None)
        with _lock:
            server = _running_server()
        self.sentinel, w = server.connect_to_new_process(self._fds)
        # The child watches a copy of the data pipe's write end to learn that this process is gone.
        _parent_w = os.dup(w)
        self.finalizer = util.Finalize(self, util.close_fds, (_parent_w, self.sentinel))
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class _Process(process.BaseProcess):
    _start_method = "forkserver"

    @staticmethod
    def _Popen(process_obj):
        return _Popen(process_obj)


class _Context(mp_context.ForkServerContext):
    Process = _Process


_CONTEXT = _Context()
