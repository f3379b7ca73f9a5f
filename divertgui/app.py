"""The `divertgui` entry point: QApplication, the session on its own QThread, the main window."""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time

from PySide6.QtCore import QCoreApplication, QEventLoop, QObject, QSettings, Qt, QThread, QTimer, Signal
from PySide6.QtWidgets import QApplication

from divertgui import __version__
from divertgui.engine import privileges
from divertgui.engine.protocol import command
from divertgui.engine.session import demo_fallback_reason
from divertgui.views.host_link import HostLink


class SessionThread(QThread):
    def __init__(self, session, parent=None):
        super().__init__(parent)
        self.session = session
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            self.session.run()
        except BaseException as exc:  # reported by the bridge, not lost with the thread
            self.failure = exc


class SessionBridge(HostLink):
    """Runs a Session on a QThread; each dict it emits arrives in the GUI thread as one `event`.

    Events cross the thread boundary as JSON text in one queued signal: the
    protocol promises serialisable events, and text is what a later
    out-of-process session will send anyway.
    """

    _wire = Signal(str)
    # As a host of the window: the window's own (index 0), never lost, its session writing the store.
    shares_store = True

    def __init__(self, store, parent=None):
        super().__init__(parent)
        from divertgui.engine.session import Session
        self.store = store
        # No bound on the commands waiting for the session, unlike a service's: the GUI thread posts
        # them, at the pace of a person, and must never wait for the session to make room.
        self.session = Session(self._emit, store)
        self.thread = SessionThread(self.session, self)
        self.thread.finished.connect(self._finished)
        self._wire.connect(self._receive, Qt.ConnectionType.QueuedConnection)

    def _emit(self, message: dict) -> None:
        # Called on the session thread.
        self._wire.emit(json.dumps(message))

    def _receive(self, text: str) -> None:
        self.event.emit(json.loads(text))

    def _finished(self) -> None:
        failure = self.thread.failure
        if failure is not None:
            self.event.emit({"type": "error", "message": f"the session stopped: {failure!r}", "where": "session"})

    def start(self) -> None:
        self.thread.start()

    def post(self, kind: str, **fields) -> None:
        self.session.post(command(kind, **fields))

    def ask_clear(self) -> None:
        self.post("clear")

    def reconnect(self) -> None:
        raise RuntimeError("the window's own session is never lost")

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        if not self.thread.isRunning():
            return True
        self.post("shutdown")
        return self.thread.wait(timeout_ms)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="divertgui", description="Packet interception workbench.")
    parser.add_argument("--demo", action="store_true", help="start at once on the built-in demo traffic source")
    parser.add_argument("--self-test", action="store_true",
                        help="open the window, run the demo, hold/edit/forward a packet, report and exit")
    parser.add_argument("--live", action="store_true",
                        help="with --self-test: capture real traffic the test makes on loopback, through the service")
    parser.add_argument("--replay", metavar="FILE", help="open a pcap/pcapng file")
    parser.add_argument("--filter", metavar="TEXT", default="", help="capture filter (WinDivert language)")
    parser.add_argument("--cgroup", metavar="PATH", default="",
                        help="live capture: record the creators of the sockets of this cgroup v2 alone, a path "
                             "under the cgroup mount such as system.slice/nginx.service (default: every process)")
    parser.add_argument("--rate", type=float, default=200.0, help="demo packets per second (default 200)")
    parser.add_argument("--connect", metavar="TARGET", action="append",
                        help="a capture service to use: local (the default: start divert serve), unix:PATH "
                             "or ssh://[user@]host[:port]; repeat it for several hosts in one window")
    parser.add_argument("--version", action="version", version=f"divertgui {__version__}")
    return parser.parse_args(argv)


def _use_offscreen_without_display() -> None:
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


_startup_frozen = False


def _freeze_startup_objects() -> None:
    """What exists once the first window is built (modules, widgets, their wrappers) lives as long
    as the process: left in the collector's oldest generation, every full collection would walk
    all of it, a pause of a few hundred milliseconds in the event loop while packets arrive."""
    global _startup_frozen
    if not _startup_frozen:
        _startup_frozen = True
        gc.freeze()


class GuiThreadCollector(QObject):
    """While a Workbench is open, cyclic garbage is collected in the GUI thread alone.

    Python collects in whichever thread's allocation crosses its threshold, so a
    session or service-reader thread could destroy Qt objects that a closed
    window left in reference cycles. Qt's destructor there takes one of Qt's
    locks and then waits for the interpreter lock, which the GUI thread holds
    while it waits for that same lock to destroy objects of its own: both stop
    for good. So automatic collection is off while a Workbench is open, and a
    timer of the GUI thread makes the collections Python's thresholds call for.
    """

    INTERVAL_MS = 100
    _open = 0
    _enabled_before = True

    def __init__(self):
        super().__init__(QCoreApplication.instance())
        if not GuiThreadCollector._open:
            GuiThreadCollector._enabled_before = gc.isenabled()
            gc.disable()
        GuiThreadCollector._open += 1
        self._timer = QTimer(self)
        self._timer.setInterval(self.INTERVAL_MS)
        self._timer.timeout.connect(self.collect_due)
        self._timer.start()

    @staticmethod
    def collect_due() -> None:
        """The oldest generation whose count is past its threshold, as Python itself would collect."""
        counts, thresholds = gc.get_count(), gc.get_threshold()
        if not thresholds[0] or counts[0] <= thresholds[0]:
            return
        generation = max(g for g in (0, 1, 2) if g == 0 or counts[g] > thresholds[g])
        gc.collect(generation)

    def close(self) -> None:
        """Once the last Workbench has closed (its threads stopped), Python collects on its own again."""
        if not self._timer.isActive():
            return
        self._timer.stop()
        GuiThreadCollector._open -= 1
        if not GuiThreadCollector._open:
            gc.collect()
            if GuiThreadCollector._enabled_before:
                gc.enable()


class Workbench:
    """The store, the links to the capture services and the main window, wired together.

    `target` names the capture service the window talks to (local, unix:PATH,
    ssh://...; divertgui.service.client), or several. The first is reached
    before the window opens, the others in the background; File > Connect to
    Host… adds more. When the local service cannot be started (its program is
    not ours to run), or `target` is None, the session runs on a thread of
    this process, without privileges: the demo network and files work, live
    capture says why not (`unavailable`).
    """

    def __init__(self, options=None, target: str | list[str] | None = None, **client_options):
        from divertgui.engine.store import CaptureStore
        from divertgui.views.hosts import Hosts
        from divertgui.views.main_window import MainWindow
        self.collector = GuiThreadCollector()
        self.store = CaptureStore()
        self.unavailable: str | None = None
        self.hosts = Hosts(self.store)
        targets = [target] if isinstance(target, str) or target is None else list(target)
        self.hosts.add(self._link(targets[0], client_options))
        self.window = MainWindow(self.store, self.post, options)
        self.hosts.event.connect(self.window.handle_event)
        from divertgui.views.hosts_bar import HostsBar
        self.hosts_bar = HostsBar(self.hosts, self.window, self.reconnect_host, self.reconnect)
        self._add_connection_actions()
        for other in targets[1:]:
            self.connect_to(other, **client_options)
        _freeze_startup_objects()

    @property
    def bridge(self):
        """The first capture service's link."""
        return self.hosts.links[0]

    def _link(self, target: str | None, client_options: dict):
        if target is not None:
            from divertgui.views.connection import ServiceConnection
            connection = ServiceConnection(target, self.store, **client_options)
            try:
                connection.start()
                return connection
            except ConnectionError as exc:
                if target != "local":
                    raise
                self.unavailable = str(exc)
        bridge = SessionBridge(self.store)
        bridge.start()
        return bridge

    def post(self, kind: str, **fields) -> None:
        if kind == "start" and fields.get("source") == "live" and self._needs_elevation():
            self._elevate()
        self.hosts.post(kind, **self.hosts_bar.scope(kind, fields))

    def _needs_elevation(self) -> bool:
        """Windows: live capture asked of an unelevated local service, which said it cannot."""
        client = self.bridge.client
        return (sys.platform == "win32" and client is not None and client.target == "local"
                and not client.elevated and bool((self.hello or {}).get("live")))

    def _elevate(self) -> None:
        from divertgui.views.connection import ServiceConnection
        connection = ServiceConnection("local", self.store, host_index=self.bridge.index, elevated=True)
        connection.start_in_background()
        self.hosts.replace(self.bridge, connection)

    @property
    def hello(self) -> dict | None:
        """The first capture service's introduction (None in-process, or before it arrives)."""
        return self.bridge.hello

    def _add_connection_actions(self) -> None:
        from PySide6.QtGui import QAction
        menu = self.window.file_menu
        quit_action = next(a for a in menu.actions() if a.text() == "&Quit")
        action = QAction("&Connect to Host…", self.window)
        action.triggered.connect(self.connect_dialog)
        menu.insertAction(quit_action, action)
        menu.insertMenu(quit_action, self.hosts_bar.reconnect_menu)
        menu.insertSeparator(quit_action)

    def connect_to(self, target: str, **client_options) -> None:
        """Adds the capture service at `target`, reached in the background; a failure shows in its banner.

        The in-process session, there only because no service could be started, gives way to it."""
        from divertgui.views.connection import ServiceConnection
        connection = ServiceConnection(target, self.store, **client_options)
        connection.start_in_background()
        if isinstance(self.bridge, SessionBridge):
            self.hosts.replace(self.bridge, connection)
            self.unavailable = None
        else:
            self.hosts.add(connection)

    def connect_dialog(self) -> None:
        from divertgui.service.client import TargetError
        from divertgui.views.connection import ask_target
        try:
            target = ask_target(self.window)
            if target:
                self.connect_to(target)
        except TargetError as exc:
            self.window.error_banner.show_message(str(exc), "connection")

    def reconnect(self) -> None:
        """Reconnects every lost host."""
        lost = [link for link in self.hosts.links if link.lost]
        if not lost:
            self.window.statusBar().showMessage("Every capture service is connected", 5000)
        for link in lost:
            self.reconnect_host(link)

    def reconnect_host(self, link) -> None:
        link.reconnect()
        self.window.error_banner.hide()

    def close(self) -> bool:
        self.window.close()
        stopped = self.hosts.shutdown()
        if stopped:
            self.collector.close()
        return stopped


def wait_until(predicate, timeout: float) -> bool:
    """Runs the event loop until `predicate()` or `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def self_test(bench: Workbench) -> tuple[bool, str]:
    """Demo traffic for a few seconds, one packet held, edited and forwarded; (passed, summary)."""
    from divertgui.engine.packet import Packet
    from divertgui.engine.store import Verdict
    window = bench.window
    started = time.monotonic()
    window.start_capture()
    if not wait_until(lambda: window.count >= 50, 10):
        return False, f"no traffic: {window.count} rows after 10 s (errors: {window.errors})"
    wait_until(lambda: False, max(0.0, 2.0 - (time.monotonic() - started)))
    window.intercept.filter.set_text("tcp and tcp.PayloadLength > 0")
    window.intercept.filter.submit()
    if not wait_until(lambda: window.queue_model.rowCount() > 0, 10):
        return False, "no TCP packet with a payload was held within 10 s"
    panel = window.intercept
    hold_id = window.queue_model.hold_id(0)
    panel.select(hold_id)
    row = window.queue_model.store_row(0)
    old_port = Packet(bench.store.raw(row)).dst_port
    new_port = (old_port + 1) % 65536
    panel.editor.tabs.setCurrentIndex(0)
    panel.editor.form.field("tcp", "dst_port").setText(str(new_port))
    panel.editor.form.field("payload", "bytes").setText("edited by the self-test")
    window.intercept.filter.set_text("false")
    window.intercept.filter.submit()
    panel.forward()
    if not wait_until(lambda: window.queue_model.row_of(hold_id) is None, 5):
        return False, f"held packet {hold_id} was not released after Forward"
    window.post("forward_all")
    wait_until(lambda: bench.store.verdict(row) == Verdict.MODIFIED, 2)
    sent = Packet(bench.store.raw(row))
    check = Packet(bytearray(sent.raw))
    check.recalculate_checksums()
    problems = []
    if bench.store.verdict(row) != Verdict.MODIFIED:
        problems.append(f"row {row + 1} is {bench.store.verdict(row).name}, not MODIFIED")
    if sent.dst_port != new_port or sent.payload != b"edited by the self-test":
        problems.append(f"row {row + 1} was not sent as edited ({sent!r})")
    if check.raw != sent.raw:
        problems.append(f"row {row + 1} has wrong checksums")
    if bench.store.original(row) is None:
        problems.append(f"row {row + 1} lost its original bytes")
    updates_before = window.charts.updates
    wait_until(lambda: window.charts.updates >= updates_before + 4, 3)
    if window.stats.total_packets == 0 or window.charts.updates < 4:
        problems.append(f"charts did not update ({window.charts.updates} redraws, "
                        f"{window.stats.total_packets} packets counted)")
    if window.table_model.rowCount() == 0:
        problems.append("the packet table shows no rows")
    window.stop_capture()
    if problems:
        return False, "; ".join(problems)
    return True, (f"self-test passed: {window.count} packets in {time.monotonic() - started:.1f} s, "
                  f"{window.charts.updates} chart updates, packet {row + 1} held and forwarded modified "
                  f"(tcp.DstPort {old_port}->{new_port}, payload replaced, checksums valid)")


def _argument_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the command line, before any window opens."""
    if args.live and not args.self_test:
        return "--live goes with --self-test"
    for target in args.connect or ():
        from divertgui.service.client import TargetError, check_target
        try:
            check_target(target)
        except TargetError as exc:
            return f"--connect: {exc}"
    if args.filter:
        from divertgui.engine.filter import FilterError, compile_filter
        from divertgui.engine.filter.errors import report
        try:
            compile_filter(args.filter)
        except FilterError as exc:
            return report(args.filter, exc, "--filter: ")
    if args.replay and not os.path.isfile(args.replay):
        return f"--replay: no such file: {args.replay}"
    return None


def live_problem(bench: Workbench, timeout: float = 20.0) -> str | None:
    """Why the workbench's session cannot capture live traffic, in one sentence; None when it can."""
    if bench.unavailable:
        return bench.unavailable
    if bench.bridge.client is None:
        return privileges.live_capture_problem()
    if not wait_until(lambda: bench.hello is not None or bench.bridge.lost, timeout):
        return f"the capture service did not answer within {timeout:.0f} s"
    if bench.hello is None:
        return f"the capture service ended: {bench.window.errors[-1]['message'] if bench.window.errors else ''}"
    return bench.hello.get("live") or None


def open_workbench(args: argparse.Namespace) -> Workbench:
    """The window as the command line asks, shown, with the demo or the replay started when asked for.

    When live capture is impossible here and nothing else was asked for, the
    window says why and the demo network runs at once, so that a first start
    from a double-click shows traffic rather than an empty list.
    """
    from divertgui.views.capture_options import CaptureOptions
    options = CaptureOptions(source="demo", rate=500.0 if args.self_test else args.rate, cgroup=args.cgroup)
    bench = Workbench(options, args.connect or ["local"])
    window = bench.window
    problem = None
    if not (args.demo or args.self_test):
        problem = live_problem(bench)
        options.source = "demo" if problem else "live"
    if args.filter:
        window.capture_filter.set_text(args.filter)
    window.show()
    if args.self_test:
        return bench
    if args.replay:
        window.files.open_capture(args.replay)
    elif args.demo:
        window.start_capture()
    elif problem and not bench.bridge.lost:
        window.show_notice(demo_fallback_reason(problem))
        window.start_capture()
    return bench


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    problem = _argument_error(args)
    if problem:
        print(f"divertgui: {problem}", file=sys.stderr)
        return 2
    if args.self_test:
        _use_offscreen_without_display()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName("divertgui")
    app.setApplicationName("divertgui")
    app.setApplicationVersion(__version__)
    if args.self_test:
        # A self-test neither reads nor changes the user's settings.
        scratch = tempfile.TemporaryDirectory(prefix="divertgui-self-test-")
        QSettings.setDefaultFormat(QSettings.Format.IniFormat)
        QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, scratch.name)
    try:
        bench = open_workbench(args)
    except ConnectionError as exc:
        print(f"divertgui: {exc}", file=sys.stderr)
        return 1
    if args.self_test:
        try:
            if args.live:
                from divertgui.live_self_test import live_self_test
                passed, summary = live_self_test(bench, wait_until)
            else:
                passed, summary = self_test(bench)
        except Exception as exc:
            passed, summary = False, f"self-test failed: {exc!r}"
        if not bench.close():
            passed, summary = False, summary + "; the session thread did not stop"
        print(summary if passed else f"self-test FAILED: {summary}", flush=True)
        return 0 if passed else 1
    code = app.exec()
    bench.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
