"""The window's side of a capture service, without Qt: start or reach a
service, send it commands, and turn what it sends into rows of a capture
store and event dicts (divertgui.engine.protocol).

Targets:
    local                       `divert serve` started as a child process
    unix:PATH                   a service listening on a Unix socket
    ssh://[user@]host[:port]    `divert serve` on another host, through the system's ssh
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from typing import Callable

import numpy as np

from divertgui.engine.interface_names import checked_names
from divertgui.engine.processes import MAX_INDEX as MAX_PROCESS_INDEX, Process
from divertgui.engine.store_record import Flags
from divertgui.service import framing
from divertgui.service.passed_files import send_with_file
from divertgui.service.packet_frames import decode_edit, decode_packets, decode_verdicts
from divertgui.service.row_map import RowMap

SSH = "/usr/bin/ssh"
REMOTE_COMMAND = "divert serve"
ADDRESS_FLAGS = int(Flags.OUTBOUND | Flags.LOOPBACK | Flags.IMPOSTOR | Flags.IPV6 | Flags.SNIFFED
                    | Flags.IP_CHECKSUM | Flags.TCP_CHECKSUM | Flags.UDP_CHECKSUM | Flags.FORWARD_LAYER
                    | Flags.DIRECTION_UNKNOWN)
STDERR_KEPT = 8192


class TargetError(ValueError):
    """A connection target that is not one of the forms above."""


TARGET_FORMS = "local, unix:PATH or ssh://[user@]host[:port]"


def check_target(target: str) -> str:
    """`target` when it has one of TARGET_FORMS; TargetError saying so otherwise."""
    if not (target == "local" or target.startswith(("unix:", "ssh://"))):
        raise TargetError(f"{target!r}: use {TARGET_FORMS}")
    return target


def service_command() -> list[str]:
    """How this installation starts `divert serve`: the bundled or installed `divert`, else this Python."""
    here = os.path.dirname(os.path.abspath(sys.executable))
    name = "divert.exe" if sys.platform == "win32" else "divert"
    program = os.path.join(here, name)
    # The bundle's capture program may be there and not ours to run (the group divertgui): then say so.
    if getattr(sys, "frozen", False) or (os.path.isfile(program) and os.access(program, os.X_OK)):
        return [program, "serve"]
    return [sys.executable, "-I", "-m", "divertgui.cli", "serve"]


def not_allowed_sentence(program: str) -> str:
    """Why this user cannot start the capture program, and what to do, in one sentence."""
    from divertgui.engine.privileges import CAPTURE_GROUP
    user = os.environ.get("USER") or "YOUR-NAME"
    return (f"capturing needs the capture program {program}, which only members of the group {CAPTURE_GROUP} "
            f"may run: ask an administrator to run sudo usermod -a -G {CAPTURE_GROUP} {user}, then log in again")


def ssh_command(target: str, remote_command: str = REMOTE_COMMAND, options=()) -> list[str]:
    """The ssh command line for `ssh://[user@]host[:port]`: non-interactive, its errors on stderr."""
    parsed = urllib.parse.urlsplit(target)
    if parsed.scheme != "ssh" or not parsed.hostname or parsed.path not in ("", "/") or parsed.query:
        raise TargetError(f"{target!r} is not ssh://[user@]host[:port]")
    try:
        port = parsed.port
    except ValueError:
        raise TargetError(f"{target!r} has a bad port") from None
    command = [SSH, "-o", "BatchMode=yes", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=2",
               *options]
    if port is not None:
        command += ["-p", str(port)]
    if parsed.username:
        command += ["-l", urllib.parse.unquote(parsed.username)]
    host = parsed.hostname
    if host.startswith("-"):
        raise TargetError(f"{target!r}: a host name cannot start with '-'")
    return command + ["--", host, remote_command]


def host_label(target: str) -> str:
    """What the Host column shows for a target."""
    if target == "local":
        return "local"
    if target.startswith("unix:"):
        return target
    parsed = urllib.parse.urlsplit(target)
    return parsed.hostname or target


class ServiceClient:
    """One connection to a capture service.

    `on_event(dict)` is called on the connection's reader thread, after the
    rows the event speaks of are in `store`. When the stream ends, one last
    error event (where "connection") says why, with ssh's or the service's
    own words.
    """

    def __init__(self, target: str, store, on_event: Callable[[dict], None], *,
                 remote_command: str = REMOTE_COMMAND, ssh_options=(), command: list[str] | None = None,
                 elevated: bool = False, host_index: int | None = None):
        self.target = target
        self.host = host_label(target)
        self.store = store
        self.on_event = on_event
        self.remote_command = remote_command
        self.ssh_options = tuple(ssh_options)
        self.command = command
        self.elevated = elevated       # Windows: start the local service through a UAC prompt
        self._pipe = None
        self._read: Callable[[int], bytes] | None = None
        self._write: Callable[[bytes], object] | None = None
        self.hello: dict | None = None
        # Other services append to the same store: the service's row numbers are mapped to the store's.
        self.host_index = store.hosts.add(self.host) if host_index is None else host_index
        self.host = store.hosts.name(self.host_index)      # unique in the window: "web (2)"
        self._rows = RowMap()
        self._clears_asked = 0
        self._process_map = np.zeros(1, np.uint16)     # the service's process index -> the store's
        self.connected = False
        self._process: subprocess.Popen | None = None
        self._socket: socket.socket | None = None
        self._write_lock = threading.Lock()
        self._stderr = bytearray()
        self._closing = False
        self._reader: threading.Thread | None = None
        self._stderr_reader: threading.Thread | None = None

    # -- connecting ---------------------------------------------------------------

    def start(self) -> None:
        if self.target == "local" and self.elevated and sys.platform == "win32":
            from divertgui.service.windows import ElevatedPipe, ElevationError
            self._pipe = ElevatedPipe()
            try:
                self._pipe.start_service(self.command[0] if self.command else None)
            except ElevationError as exc:
                self._pipe.close()
                raise ConnectionError(str(exc)) from None
            self._read, self._write = self._pipe.read, self._pipe.write
        elif self.target == "local":
            self._spawn(self.command or service_command())
        elif self.target.startswith("unix:"):
            path = self.target[len("unix:"):]
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
            except OSError as exc:
                sock.close()
                raise ConnectionError(f"{self.target}: cannot connect: {exc.strerror or exc}") from None
            self._socket = sock
            self._read, self._write = sock.recv, sock.sendall
        elif self.target.startswith("ssh://"):
            self._spawn(ssh_command(self.target, self.remote_command, self.ssh_options))
        else:
            check_target(self.target)
        self.connected = True
        self._reader = threading.Thread(target=self._read_frames, name=f"service-{self.host}", daemon=True)
        self._reader.start()

    def _spawn(self, command: list[str]) -> None:
        try:
            self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, bufsize=0, start_new_session=True)
        except PermissionError:
            raise ConnectionError(not_allowed_sentence(command[0])) from None
        except OSError as exc:
            raise ConnectionError(f"{self.target}: cannot start {command[0]}: {exc.strerror or exc}") from None
        self._read = self._process.stdout.read
        self._write = self._process.stdin.write
        self._stderr_reader = threading.Thread(target=self._keep_stderr, daemon=True)
        self._stderr_reader.start()

    def _keep_stderr(self) -> None:
        for line in iter(self._process.stderr.readline, b""):
            self._stderr += line
            del self._stderr[:-STDERR_KEPT]

    @property
    def pid(self) -> int | None:
        """The child process (service or ssh), None for a socket."""
        return self._process.pid if self._process is not None else None

    def stderr_text(self) -> str:
        return self._stderr.decode("utf-8", "replace").strip()

    # -- commands -------------------------------------------------------------------

    def send(self, command: dict) -> None:
        if self._write is None:
            raise ConnectionError(f"{self.host}: not connected")
        fd = self._file_to_attach(command)
        if fd is not None:
            command = dict(command, attached=True)
        frame = framing.encode_json(command)
        with self._write_lock:
            try:
                if fd is None:
                    self._write(frame)
                else:
                    send_with_file(self._socket, frame, fd)
            except (OSError, ValueError) as exc:
                raise ConnectionError(f"{self.host}: the service is gone ({exc})") from None
            finally:
                if fd is not None:
                    os.close(fd)

    def _file_to_attach(self, command: dict) -> int | None:
        """The capture file a command reads, opened here to go with it over a Unix socket: the service,
        whoever it runs as, then reads what this user can, its 0600 files too. A file this user cannot
        open goes by its path alone, for the service to judge."""
        reads_file = command.get("type") == "open" or (command.get("type") == "start"
                                                         and command.get("source") == "replay")
        if self._socket is None or not reads_file or not isinstance(command.get("path"), str):
            return None
        try:
            return os.open(command["path"], os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except (OSError, ValueError):
            return None

    def post(self, kind: str, **fields) -> None:
        """A command (divertgui.engine.protocol); a lost service says so through an event instead."""
        try:
            self.send({"type": kind, **fields})
        except ConnectionError:
            pass

    def close(self, timeout: float = 5.0) -> None:
        """Ask the service to end, then let go of it."""
        self._closing = True
        if self.connected:
            self.post("shutdown")
        if self._socket is not None:
            if self._reader is not None:
                self._reader.join(timeout)
            self._socket.close()
        if self._pipe is not None:
            if self._reader is not None:
                self._reader.join(timeout)
            self._pipe.close()
        if self._process is not None:
            try:
                self._process.stdin.close()
            except OSError:
                pass
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._reader is not None:
            self._reader.join(timeout)

    # -- what the service sends ------------------------------------------------------

    def _read_frames(self) -> None:
        reader = framing.FrameReader(self._read, framing.MAX_SERVICE_FRAME)
        why = "the service closed the connection"
        try:
            for kind, body in reader:
                self._apply(kind, body)
        except (framing.FrameError, ValueError) as exc:
            why = f"the service sent a broken frame ({exc})"
        except OSError as exc:
            why = f"reading from the service failed ({exc})"
        except Exception as exc:   # whatever breaks here must still say the connection ended
            why = f"the service's data could not be stored ({exc!r})"
        self.connected = False
        if self._process is not None:
            try:
                self._process.wait(2)
            except subprocess.TimeoutExpired:
                pass
            if self._stderr_reader is not None:
                self._stderr_reader.join(1)
        if not self._closing:
            said = self.stderr_text()
            self.on_event({"type": "error", "where": "connection",
                           "message": f"{self.host}: {why}" + (f": {said}" if said else "")})

    def ask_clear(self) -> None:
        """The window emptied the store and asks the service to: what it sent before that is gone."""
        self._clears_asked += 1
        self.post("clear")

    def _apply(self, kind: int, body: bytes) -> None:
        store = self.store
        if kind == framing.JSON:
            message = self._in_store_terms(framing.decode_json(body))
            if message.get("type") == "hello":
                self.hello = message
            if message.get("type") == "processes":
                self._learn_processes(message)
                return
            if message.get("type") == "interfaces":
                store.name_interfaces(checked_names(message.get("interfaces") or (), "an interfaces event"),
                                      self.host_index)
                return
            self.on_event(message)
        elif kind == framing.CLEAR:
            if self._clears_asked:
                self._clears_asked -= 1
            else:
                store.clear()
            self._rows.service_cleared()
        elif self._clears_asked:
            return      # rows, verdicts and edits from before the window's clear
        elif kind == framing.PACKETS:
            rows, blob = decode_packets(body)
            timestamps = rows["timestamp"]
            if self.target.startswith("ssh://"):
                # Another machine's monotonic clock means nothing here (the list's times, the
                # charts' seconds): its packets are placed on this one's by their wall-clock times.
                timestamps = rows["wall_ns"] + (time.monotonic_ns() - time.time_ns())
            stored, generation = store.append_received(
                rows["wall_ns"], timestamps, rows["if_idx"], rows["sub_if_idx"],
                rows["flags"] & ADDRESS_FLAGS, rows["verdict"], rows["length"], blob,
                self._store_processes(rows["process"]), self.host_index)
            self._rows.added(stored, generation)
        elif kind == framing.VERDICTS:
            changes = decode_verdicts(body)
            generation = store.generation
            rows = self._rows.store_rows(changes["row"], generation)
            known = rows >= 0
            # The window may empty the store meanwhile: the verdicts then land nowhere.
            store.set_verdicts_in(generation, rows[known].tolist(), changes["verdict"][known].tolist())
        elif kind == framing.EDIT:
            row, raw = decode_edit(body)
            generation = store.generation
            row = self._rows.store_row(row, generation)
            if row >= 0:
                store.set_edited_in(generation, row, raw)

    def _store_processes(self, indexes: np.ndarray) -> np.ndarray:
        known = indexes < len(self._process_map)
        return np.where(known, self._process_map[np.where(known, indexes, 0)], 0)

    def _learn_processes(self, message: dict) -> None:
        """The service's process indexes as the store's; an index never named stays 0 (no process)."""
        for index, pid, name, user in message.get("processes") or ():
            index = int(index)
            if not 0 < index < MAX_PROCESS_INDEX:
                raise ValueError(f"a processes event names index {index}")
            if index >= len(self._process_map):
                grown = np.zeros(index + 1, np.uint16)
                grown[:len(self._process_map)] = self._process_map
                self._process_map = grown
            self._process_map[index] = self.store.processes.intern(Process(int(pid), str(name), str(user)))

    def _in_store_terms(self, message: dict) -> dict:
        """An event with the service's row numbers and generations as the store counts them."""
        kind = message.get("type")
        if kind == "rows":
            rows = self._rows
            message["count"] = rows.store_count
            message["generation"] = self.store.generation if rows.generation is None else rows.generation
        elif kind == "events":
            # Recorded before the window emptied the store, they belong to no generation of it.
            message["generation"] = -1 if self._clears_asked else self.store.generation
        elif kind == "held":
            held = message.get("held") or []
            generation = self.store.generation
            rows = self._rows.store_rows([int(h["row"]) for h in held], generation).tolist()
            # A packet whose row the window emptied is announced again with its new row.
            message["held"] = [dict(h, row=row) for h, row in zip(held, rows) if row >= 0]
        return message
