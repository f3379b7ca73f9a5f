"""One client of the capture service: a Session driven by the client's
commands, its events and rows framed back.

Fail-safe: when the client goes away (end of stream, a broken frame, a
failed write) the session releases what it holds by the hold policy
(forward unless the client chose drop), removes its rules and ends, ahead
of the commands still waiting for it.

Back-pressure: at most MAX_WAITING_COMMANDS commands wait for the session;
beyond, the reader waits, and so, its socket or pipe full, does the client.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Callable

from divertgui.engine.protocol import event
from divertgui.engine.session import Session
from divertgui.service import framing
from divertgui.service.commands import CommandError, validate
from divertgui.service.passed_files import PassedFiles
from divertgui.service.peer_files import open_for_peer
from divertgui.service.store_relay import StoreRelay
from divertgui.service.writer import FrameWriter

PROTOCOL_VERSION = 2
MAX_WAITING_COMMANDS = 64


class Peer:
    """Who is at the other end: a uid and its groups when the transport says (a Unix socket), else
    None (the owner)."""

    def __init__(self, description: str, uid: int | None = None, groups: frozenset[int] = frozenset()):
        self.description = description
        self.uid = uid
        self.groups = groups


class Connection:
    def __init__(self, read: Callable[[int], bytes], write: Callable[[bytes], object], peer: Peer,
                 log: Callable[[str], None], live_problem: str = "", passed: PassedFiles | None = None):
        """`passed`: the files a client of a Unix socket attaches to its commands (`read` is its read)."""
        self.peer = peer
        self._read = read
        self._passed = passed
        self._log = log
        self._live_problem = live_problem
        self._hold_action = "forward"
        self._gone = threading.Event()
        self.writer = FrameWriter(write, self._client_gone)
        self.relay = StoreRelay(self.writer.send)
        self.session = Session(self.relay.send_event, self.relay, gui_in_process=False,
                               max_waiting_commands=MAX_WAITING_COMMANDS)

    def run(self) -> None:
        """Serve until the client leaves or asks for shutdown; the session's rules are gone on return."""
        self.relay.send_event(event("hello", version=PROTOCOL_VERSION, host=socket.gethostname(),
                                    pid=os.getpid(), live=self._live_problem))
        reader = threading.Thread(target=self._read_commands, name="command-reader", daemon=True)
        reader.start()
        try:
            self.session.run()
        finally:
            self.writer.close()
            if self._passed is not None:
                self._passed.close()
        left = self.session.commands_not_carried_out
        if left:
            self._log(f"{self.peer.description}: {left} of its commands were not carried out, the session "
                      f"having ended before them")

    def end(self, why: str) -> None:
        """End the session as if the client had left (the service is stopping)."""
        self._client_gone(why)

    def _client_gone(self, why: str) -> None:
        if self._gone.is_set():
            return
        self._gone.set()
        # Never a post: this runs on the writer's thread, in a signal handler on the session's own
        # thread, or on the reader's, and a post may wait for room in the session's queue.
        self.session.end(drop_held=self._hold_action == "drop")
        self._log(f"{self.peer.description}: {why}; releasing held packets ({self._hold_action}) and ending")

    def _read_commands(self) -> None:
        reader = framing.FrameReader(self._read, framing.MAX_COMMAND_FRAME)
        try:
            for kind, body in reader:
                if self._gone.is_set():
                    return
                if kind != framing.JSON:
                    self._refuse(f"a client sends JSON command frames only, not frame kind {chr(kind)!r}")
                    continue
                try:
                    self._take(validate(framing.decode_json(body)))
                except (CommandError, ValueError) as exc:
                    self._refuse(str(exc))
        except framing.FrameError as exc:
            self._refuse(f"broken frame: {exc}")
            self._client_gone(f"broken frame ({exc})")
            return
        except (OSError, ValueError) as exc:
            self._client_gone(f"reading failed ({exc})")
            return
        self._client_gone("the client closed the connection")

    def _take(self, command: dict) -> None:
        attached = command.pop("attached", False)     # the service's field: the session reads the file
        if command["type"] == "start" and command.get("source") == "replay":
            self._open_for_peer(command, "start.path", attached)
        if command["type"] == "open":
            self._open_for_peer(command, "open.path", attached)
        if command["type"] == "set_hold_timeout":
            self._hold_action = command.get("action", "forward")
        self.session.post(command)

    def _open_for_peer(self, command: dict, name: str, attached: bool) -> None:
        """A client replays or opens the file it attached, or by path only files its user may read anyway."""
        if attached:
            if self._passed is None:
                raise CommandError(f"{name}: files come attached over a Unix socket only")
            command["file"] = self._passed.take(name, command.get("path", ""))
            return
        if self.peer.uid is None or self.peer.uid == os.geteuid():
            return
        command["file"] = open_for_peer(command.get("path", ""), self.peer.uid, self.peer.groups, name)

    def _refuse(self, message: str) -> None:
        self._log(f"{self.peer.description}: refused: {message}")
        self.relay.send_event(event("error", message=message, where="command"))
