"""`divert serve`: a capture service on standard input/output or a Unix socket."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time

from divertgui.engine import privileges
from divertgui.service import framing
from divertgui.service.connection import Connection, Peer
from divertgui.service.hardening import harden
from divertgui.service.passed_files import PassedFiles
from divertgui.service.peers import AccessPolicy, peer_credentials, peer_groups, who
from divertgui.service.refusal_log import RefusalLog
from divertgui.service.transports import SocketPathError, listen_unix, take_stdio, write_all

MAX_CLIENTS = 8
MAX_CLIENTS_PER_USER = 2    # of a user other than the service's own, while the service serves several
ACCEPT_POLL = 0.2
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def interrupt_lock_waits() -> None:
    if sys.platform.startswith("linux"):
        from divertgui.engine.backends import netfilter_rules
        netfilter_rules.interrupt_lock_waits()


def start_fork_server() -> None:
    """Capture workers are forked, never exec'd, so that they hold the service's capabilities (file
    capabilities do not pass through exec); the server they are forked from is forked now, while
    the service has one thread and, of its descriptors, only standard input, output and error."""
    if sys.platform.startswith("linux"):
        from divertgui.engine import fork_server
        fork_server.prepare()


def log(message: str) -> None:
    """A line on standard error, which may be gone with the client that read it. What a client sent
    (a path, a name) stays on that line: a line break or other control character in it is escaped,
    so no client can write a line of the log that looks like the service's own."""
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in message)
    try:
        print(f"divert serve[{os.getpid()}]: {shown}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def command_line(args) -> list[str]:
    """The arguments after the program that ask for this service again."""
    arguments = ["serve"]
    if args.listen:
        arguments += ["--listen", args.listen]
    for uid in args.allow_uid or ():
        arguments += ["--allow-uid", str(uid)]
    for name in args.allow_group or ():
        arguments += ["--allow-group", name]
    if args.pipe:
        arguments += ["--pipe", args.pipe]
    return arguments


def serve(args) -> int:
    """Serve one client on stdin/stdout, or every allowed client of `--listen PATH` until a signal."""
    if args.listen:
        args.listen = os.path.abspath(args.listen)
    harden(command_line(args))
    os.chdir("/")
    if args.listen:
        try:
            policy = AccessPolicy(args.allow_uid or (), args.allow_group or ())
        except ValueError as exc:
            log(str(exc))
            return 2
        start_fork_server()
        try:
            server = listen_unix(args.listen)
        except (SocketPathError, OSError) as exc:
            log(str(exc))
            return 2
        return serve_socket(server, args.listen, policy)
    if args.allow_uid or args.allow_group:
        log("--allow-uid and --allow-group apply to --listen only")
        return 2
    if args.pipe:
        return serve_pipe(args.pipe)
    return serve_stdio()


def serve_pipe(name: str) -> int:
    """Windows: serve the window that created the named pipe `name` and started this service elevated."""
    from divertgui.service.windows import open_service_pipe
    try:
        pipe, read, write = open_service_pipe(name)
    except (ValueError, OSError) as exc:
        log(str(exc))
        return 2
    with pipe:
        Connection(read, write, Peer(f"the window on {name}"), log, privileges.live_capture_problem() or "").run()
    return 0


def serve_stdio() -> int:
    read_fd, write_fd = take_stdio()
    start_fork_server()
    connection = Connection(lambda n: os.read(read_fd, n), lambda data: write_all(write_fd, data),
                            Peer("the client on standard input"), log, privileges.live_capture_problem() or "")
    def on_signal(signum, frame):
        interrupt_lock_waits()
        connection.end(f"{signal.Signals(signum).name} received")

    for signum in STOP_SIGNALS:
        signal.signal(signum, on_signal)
    connection.run()
    return 0


def slot_refusal(uid: int, served: list[int], policy: AccessPolicy) -> str | None:
    """Why a client of `uid` gets no slot while clients of the uids `served` have one; None when it
    does. No one user may take the slots from the others the service is there for."""
    if len(served) >= MAX_CLIENTS:
        return f"this divert service already serves {MAX_CLIENTS} clients, its most"
    if uid != os.geteuid() and policy.shared and served.count(uid) >= MAX_CLIENTS_PER_USER:
        return (f"{who(uid)} already has {MAX_CLIENTS_PER_USER} connections to this divert service, the "
                f"most one user may have while it serves others; close one of them (a window or another "
                f"divert client) first")
    return None


def _refuse(client: socket.socket, message: str) -> None:
    try:
        client.settimeout(1.0)
        client.sendall(framing.encode_json({"type": "error", "message": message, "where": "access"}))
        client.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        client.close()


def serve_socket(server: socket.socket, path: str, policy: AccessPolicy) -> int:
    stopping = threading.Event()
    connections: dict[Connection, threading.Thread] = {}
    lock = threading.Lock()

    def on_signal(signum, frame):
        interrupt_lock_waits()
        stopping.set()

    for signum in STOP_SIGNALS:
        signal.signal(signum, on_signal)
    log(f"listening on {path} for {policy.describe()}")
    server.settimeout(ACCEPT_POLL)
    problem = privileges.live_capture_problem() or ""
    refusals = RefusalLog(log)
    try:
        while not stopping.is_set():
            refusals.tick()
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            except InterruptedError:
                continue
            client.settimeout(None)
            pid, uid, gid = peer_credentials(client)
            try:
                groups = peer_groups(client, gid)
            except OSError as exc:
                # Failing closed: the primary group alone, so that a group the kernel cannot vouch for admits no one.
                log(f"the groups of process {pid} are unknown ({exc.strerror}); judging it by its primary group")
                groups = {gid}
            refusal = policy.refusal(uid, groups)
            if refusal is None:
                with lock:
                    refusal = slot_refusal(uid, [c.peer.uid for c in connections], policy)
            if refusal is not None:
                refusals.refused(uid, f"refused process {pid} of {who(uid)}: {refusal}")
                _refuse(client, refusal)
                continue
            peer = Peer(f"process {pid} of {who(uid)}", uid, frozenset(groups))
            log(f"serving {peer.description}")
            passed = PassedFiles(client)
            connection = Connection(passed.read, client.sendall, peer, log, problem, passed)

            def run(connection=connection, client=client):
                try:
                    connection.run()
                finally:
                    client.close()
                    with lock:
                        connections.pop(connection, None)

            thread = threading.Thread(target=run, name=f"client-{pid}", daemon=True)
            with lock:
                connections[connection] = thread
            thread.start()
    finally:
        refusals.close()
        server.close()
        os.unlink(path)
        with lock:
            running = list(connections.items())
        for connection, _ in running:
            connection.end("the service is stopping")
        deadline = time.monotonic() + 5
        for _, thread in running:
            thread.join(max(0.0, deadline - time.monotonic()))
        log("stopped")
    return 0
