"""The window's link to a capture service: a ServiceClient whose events arrive
in the GUI thread, and the dialog that names a host to connect to."""

from __future__ import annotations

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QInputDialog, QWidget

from divertgui.service.client import TARGET_FORMS, ServiceClient, check_target, host_label


class ServiceConnection(QObject):
    """One capture service; `event` carries each of its events into the GUI thread.

    The service appends rows to `store` on the connection's reader thread
    before the event that announces them, as the in-process session did.
    """

    event = Signal(object)
    _arrived = Signal(object)

    def __init__(self, target: str, store, parent=None, **client_options):
        super().__init__(parent)
        self.target = target
        self.host = host_label(target)
        self.store = store
        self.lost = False
        self._client_options = client_options
        self.client = ServiceClient(target, store, self._arrived.emit, **client_options)
        self._arrived.connect(self._deliver, Qt.ConnectionType.QueuedConnection)

    @property
    def hello(self) -> dict | None:
        return self.client.hello

    def start(self) -> None:
        """Start or reach the service; ConnectionError (or TargetError) says why not."""
        self.client.start()
        self.lost = False

    def reconnect(self) -> None:
        """A new service in place of a lost one; the rows captured so far stay."""
        self.client = ServiceClient(self.target, self.store, self._arrived.emit, **self._client_options)
        self.start()

    def post(self, kind: str, **fields) -> None:
        self.client.post(kind, **fields)

    def _deliver(self, event: dict) -> None:
        if event.get("type") == "error" and event.get("where") == "connection":
            self.lost = True
            event = dict(event, message=f"{event['message']}. The captured packets stay; "
                                        f"File > Reconnect starts the service again.")
            self.event.emit(event)
            self.event.emit({"type": "state", "running": False, "paused": False, "source": "",
                             "reason": f"the capture service on {self.host} is gone"})
            return
        self.event.emit(event)

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        self.client.close(timeout_ms / 1000)
        return True


def ask_target(parent: QWidget, current: str = "") -> str | None:
    """File > Connect to host…: a target typed by the user, checked; None when cancelled."""
    text, accepted = QInputDialog.getText(parent, "Connect to host",
                                          f"Capture service ({TARGET_FORMS}):", text=current or "ssh://")
    if not accepted or not text.strip():
        return None
    return check_target(text.strip())
