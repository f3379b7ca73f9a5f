"""The process of a socket the FLOW layer's programs did not see created.

The programs learn a socket's process when it is created (cgroup/sock_create),
so a flow of a socket created before the handle opened arrives with ProcessId
0. While that socket still exists, the kernel's socket diagnostics find it by
the flow's 5-tuple, checked against its cookie (the flow's EndpointId), and
its inode is found among the open files of processes (processes.SocketOwners),
once per socket, found or not. Only sockets of the network namespace of the thread that
made the lookup are found.
"""

from __future__ import annotations

from divertgui.engine.processes import SocketOwners
from divertgui.engine.sock_diag import SocketDiag

KEPT = 1 << 14              # sockets whose process is remembered, the oldest forgotten beyond


class EarlierSockets:
    """Fills in ProcessId (and the process's name) of flows whose program knew no process."""

    def __init__(self, proc: str = "/proc") -> None:
        self._proc = proc
        self._diag = SocketDiag()
        self._owners = SocketOwners(proc)
        self._known: dict[int, tuple[int, str]] = {}   # socket cookie -> (pid, name)
        self.error = ""                                 # why a lookup failed, the first time

    def fill(self, flow) -> None:
        """Sets `flow`'s (an EndpointData) process_id and process_name when its socket is found."""
        known = self._known.get(flow.endpoint_id)
        if known is None:
            # A socket not found is not looked for again (cookies are never reused): a search
            # of /proc finding no owner (another user's files) costs more than a lookup.
            known = self._look_up(flow) or (0, "")
            if len(self._known) >= KEPT:
                del self._known[next(iter(self._known))]
            self._known[flow.endpoint_id] = known
        flow.process_id, flow.process_name = known

    def _look_up(self, flow) -> tuple[int, str] | None:
        try:
            found = self._diag.lookup(flow.protocol, flow.local_addr.to_bytes(16, "big"), flow.local_port,
                                      flow.remote_addr.to_bytes(16, "big"), flow.remote_port, flow.endpoint_id)
        except OSError as exc:
            # The process is an extra: an event without it is still reported.
            self.error = self.error or f"socket diagnostics: {exc}"
            return None
        if found is None:
            return None
        pid = self._owners.find([found[0]]).get(found[0])
        if pid is None:
            return None
        try:
            with open(f"{self._proc}/{pid}/comm") as comm:
                name = comm.read().rstrip("\n")
        except OSError:
            name = ""
        return pid, name

    def close(self) -> None:
        self._diag.close()
