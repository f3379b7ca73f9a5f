"""The window's link to a capture service: a ServiceClient whose events arrive
in the GUI thread, what the window does with each event, and the dialog that
names a host to connect to."""

from __future__ import annotations

import threading

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QInputDialog, QWidget

from divertgui.engine.loss import describe, losses
from divertgui.service.client import TARGET_FORMS, ServiceClient, check_target
from divertgui.views.host_link import CONNECTED, CONNECTING, LOST, HostLink


class ServiceConnection(HostLink):
    """One capture service; `event` carries each of its events into the GUI thread.

    The service appends rows to `store` on the connection's reader thread
    before the event that announces them. `state` is CONNECTING until the
    service says hello, then CONNECTED, LOST once it is gone; `state_changed`
    says when it moves. Starting it in the background (ssh may take its time
    to reach a host) keeps the window responsive; commands posted meanwhile
    are sent once the connection is made.
    """

    _arrived = Signal(object)
    _started = Signal(str)

    def __init__(self, target: str, store, parent=None, host_index: int | None = None, **client_options):
        super().__init__(parent)
        self.target = target
        self.store = store
        self._client_options = client_options
        self.client = ServiceClient(target, store, self._arrived.emit, host_index=host_index, **client_options)
        self.index = self.client.host_index
        self.host = store.hosts.name(self.index)
        self.state = CONNECTING
        self._pending: list[tuple[str, dict]] | None = None
        self._closed = False
        self._arrived.connect(self._deliver, Qt.ConnectionType.QueuedConnection)
        self._started.connect(self._on_started, Qt.ConnectionType.QueuedConnection)

    @property
    def hello(self) -> dict | None:
        return self.client.hello

    def start(self) -> None:
        """Start or reach the service now; ConnectionError (or TargetError) says why not."""
        self._set_state(CONNECTING)
        self.client.start()

    def start_in_background(self) -> None:
        """Start or reach the service on a thread of its own; a failure arrives as a connection error event."""
        check_target(self.target)
        self._pending = []
        self._set_state(CONNECTING)
        threading.Thread(target=self._start_client, name=f"connect-{self.host}", daemon=True).start()

    def _start_client(self) -> None:
        client = self.client
        try:
            client.start()
        except ConnectionError as exc:
            self._started.emit(str(exc) or f"{self.host}: cannot connect")
            return
        if self._closed:     # the window let go while ssh was still connecting
            client.close(1.0)
            return
        self._started.emit("")

    def _on_started(self, problem: str) -> None:
        pending, self._pending = self._pending or [], None
        if problem:
            self._deliver({"type": "error", "where": "connection", "message": problem})
            return
        for kind, fields in pending:
            self.client.post(kind, **fields)

    def reconnect(self) -> None:
        """A new service in place of a lost one, started in the background; the rows captured so far stay."""
        self.client = ServiceClient(self.target, self.store, self._arrived.emit, host_index=self.index,
                                    **self._client_options)
        self.start_in_background()

    def post(self, kind: str, **fields) -> None:
        if self._pending is not None:
            self._pending.append((kind, fields))
        else:
            self.client.post(kind, **fields)

    def ask_clear(self) -> None:
        if self._pending is None:
            self.client.ask_clear()

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.state_changed.emit()

    def _deliver(self, event: dict) -> None:
        if event.get("type") == "error" and event.get("where") == "connection":
            self._set_state(LOST)
            event = dict(event, message=f"{event['message']}. The captured packets stay; "
                                        f"{reconnect_sentence(self.target)}")
            self.event.emit(event)
            self.event.emit({"type": "state", "running": False, "paused": False, "source": "",
                             "reason": f"the capture service on {self.host} is gone"})
            return
        if event.get("type") == "hello":
            self._set_state(CONNECTED)
        self.event.emit(event)

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        self._closed = True
        self.client.close(timeout_ms / 1000)
        return True


def reconnect_sentence(target: str) -> str:
    """What File > Reconnect does for a lost host of `target`."""
    if target.startswith("unix:"):
        # Someone else runs that service: the window can only knock again.
        return "File > Reconnect connects to it again once its service is back."
    return "File > Reconnect starts the service again."


class ServiceEvents:
    """Shows in the window what a capture service's events say: the capture's state, its
    errors and losses, the rows it stored, the packets it holds and the FLOW, SOCKET and
    REFLECT events it saw."""

    def __init__(self, window):
        self.window = window
        self.lost_reported = 0

    def handle(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "rows":
            self._rows(event)
        elif kind == "held":
            self._held(event)
        elif kind == "state":
            self._state(event)
        elif kind == "error":
            self._error(event)
        elif kind == "events":
            self.window.events_view.on_events(event)

    def _rows(self, event: dict) -> None:
        window = self.window
        stats = event.get("stats") or {}
        window.session_stats = stats
        self._report_loss(losses(stats))
        window.rows_announced(int(event["count"]), event.get("generation"))
        window.rules_panel.on_stats(stats)
        window.delays.extend(event.get("delays_ms") or ())

    def _report_loss(self, lost: dict[str, int]) -> None:
        """Says so while packets are being lost, not only at the end."""
        total = sum(lost.values())
        if total > self.lost_reported:
            self.window.loss_banner.show_message(describe(lost), "Capture is losing packets")
        if total != self.lost_reported:
            self.lost_reported = total
            self.window.status_line.update()

    def _held(self, event: dict) -> None:
        window = self.window
        queue, table_model = window.queue_model, window.table_model
        released = set(event.get("released", ()))
        rows = [queue.store_row(r) for r in range(queue.rowCount()) if queue.hold_id(r) in released]
        first_hold = queue.rowCount() == 0 and event.get("held")
        queue.apply_event(event)
        rows += [int(h["row"]) for h in event.get("held", ())]
        for row in rows:
            if row < window.count:
                table_model.row_changed(row)
        current = window.table.currentIndex()
        if current.isValid() and table_model.store_row(current.row()) in rows:
            window.show_current_packet(current)
        if first_hold:
            window.intercept_dock.show()
            window.intercept_dock.raise_()
        window.status_line.update()

    def _state(self, event: dict) -> None:
        window = self.window
        window.running = bool(event.get("running"))
        window.paused = bool(event.get("paused"))
        if event.get("source"):
            window.source_name = event["source"]
        window.mode_running = event.get("mode") or ""
        reason = event.get("reason") or ""
        # A source runs, but not the one asked for (live capture fell back to the demo), or live
        # packets may lack their process; later state events repeat it, and a notice closed stays closed.
        notice = (reason or event.get("notice") or "") if window.running else ""
        if notice:
            if notice != window.state_notice:
                window.show_notice(notice)
        elif window.running and window.source_name == "live":
            window.notice_banner.hide()
        elif reason:
            window.statusBar().showMessage(reason, 8000)
        window.state_reason, window.state_notice = reason, notice
        window.update_state_widgets()

    def _error(self, event: dict) -> None:
        window = self.window
        window.errors.append(event)
        window.error_banner.show_message(event.get("message", ""), event.get("where", ""),
                                         add=event.get("where") == "connection")
        if event.get("where") == "rules":
            window.rules_panel.on_error(event)
        elif event.get("where") == "connection":
            window.events_view.service_gone(event.get("host"))


def ask_target(parent: QWidget) -> str | None:
    """File > Connect to host…: a target typed by the user, checked; None when cancelled."""
    text, accepted = QInputDialog.getText(parent, "Connect to host",
                                          f"Capture service ({TARGET_FORMS}):", text="ssh://")
    if not accepted or not text.strip():
        return None
    return check_target(text.strip())
