"""What the window asks of each capture service it holds (divertgui.views.hosts): the
in-process SessionBridge and a ServiceConnection alike."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

CONNECTING, CONNECTED, LOST = "connecting", "connected", "lost"


class HostLink(QObject):
    """One host of the window. `event` carries each of its events into the GUI thread;
    `state_changed` says that `state` (CONNECTING, CONNECTED, LOST) moved.

    `index` is its store host index and `host` its name. `hello` is the service's introduction
    (None before it arrives, or with no service) and `client` its ServiceClient (None with no
    service). `shares_store` is True when the session writes the window's store itself, so that
    a "clear" command empties it; otherwise the window empties its store and `ask_clear`s."""

    event = Signal(object)
    state_changed = Signal()

    index = 0
    host = ""
    state = CONNECTED
    hello: dict | None = None
    client = None
    shares_store = False

    @property
    def lost(self) -> bool:
        return self.state == LOST

    def post(self, kind: str, **fields) -> None:
        raise NotImplementedError

    def ask_clear(self) -> None:
        """Asks the host to empty its capture after the window emptied its store."""
        raise NotImplementedError

    def reconnect(self) -> None:
        """A new service in place of a lost one."""
        raise NotImplementedError

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        raise NotImplementedError
