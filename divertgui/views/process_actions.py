"""The packet list's context menu and what it does with the selected packet's
process (show only its packets, or hold every packet of it) and host (show
only its packets)."""

from __future__ import annotations

from PySide6.QtWidgets import QMenu

from divertgui.models.packet_table import HOST


class ProcessActions:
    def __init__(self, window):
        self.window = window
        # Pids held on every host (key None), or on one host (a store host index): a pid names a
        # process on its own machine only.
        self.held: dict[int | None, list[int]] = {}

    def packet_menu(self, position) -> None:
        window = self.window
        menu = QMenu(window.table)
        menu.addAction(window.streams.follow_tcp_action)
        menu.addAction(window.streams.follow_udp_action)
        process = self.current_process()
        if process is not None:
            menu.addSeparator()
            host = self.current_host() if not window.table.isColumnHidden(HOST) else None
            menu.addAction(f"Filter on {process.label()}", lambda: self.filter_process(process.pid, host))
            menu.addAction(f"Hold Everything from {process.label()}",
                           lambda: self.hold_process(process.pid, host))
        if window.table_model.process_pid is not None:
            menu.addAction("Show Every Process", lambda: self.filter_process(None))
        if any(self.held.values()):
            menu.addAction("Stop Holding by Process", lambda: self.hold_process(None))
        if not window.table.isColumnHidden(HOST):
            menu.addSeparator()
            host = self.current_host()
            if host is not None:
                menu.addAction(f"Filter on Host {window.store.hosts.name(host)}", lambda: self.filter_host(host))
            if window.table_model.host is not None:
                menu.addAction("Show Every Host", lambda: self.filter_host(None))
        menu.exec(window.table.viewport().mapToGlobal(position))

    def current_host(self) -> int | None:
        """The store host index of the selected packet, None when none is selected."""
        window = self.window
        current = window.table.currentIndex()
        if not current.isValid() or window.table_model.stale():
            return None
        return window.store.value("host", window.table_model.store_row(current.row()))

    def filter_host(self, host: int | None) -> None:
        """Shows only the packets of store host index `host` (within the other filters); None: every host's."""
        window = self.window
        window.table_model.set_host_filter(host)
        window.statusBar().showMessage(f"Showing the packets of {window.store.hosts.name(host)} only"
                                       if host is not None else "Showing the packets of every host", 5000)
        window.status_line.update()

    def current_process(self):
        """The local process of the selected packet's flow, None when none or not known."""
        window = self.window
        current = window.table.currentIndex()
        if not current.isValid() or window.table_model.stale():
            return None
        return window.store.process(window.table_model.store_row(current.row()))

    def filter_process(self, pid: int | None, host: int | None = None) -> None:
        """Shows only the packets of process `pid` (within the display filter), on store host index
        `host` or on any host; None: every process's."""
        window = self.window
        window.table_model.set_process_filter(pid, host)
        where = f" on {window.store.hosts.name(host)}" if host is not None and not window.table.isColumnHidden(HOST) \
            else ""
        window.statusBar().showMessage(f"Showing the packets of process {pid}{where} only" if pid is not None
                                       else "Showing the packets of every process", 5000)
        window.status_line.update()

    def hold_process(self, pid: int | None, host: int | None = None) -> None:
        """Holds every packet of `pid` from now on, besides what the intercept filter holds, on every
        host or on store host index `host`; None: no process on any host."""
        scopes = list(self.held)
        if pid is None:
            self.held = {}
        else:
            self.held[host] = sorted({*self.held.get(host, []), pid})
            scopes = [host]
        everywhere = self.held.get(None, [])
        for scope in [None, *[s for s in self.held if s is not None]] if None in scopes else scopes:
            pids = sorted({*everywhere, *self.held.get(scope, [])})
            self.window.post("set_hold_processes", pids=pids, **({} if scope is None else {"host": scope}))
        held = sorted({pid for pids in self.held.values() for pid in pids})
        self.window.intercept.set_held_processes(held)
        self.window.statusBar().showMessage(
            f"Holding every packet of process {', '.join(map(str, held))}" if held
            else "No process is held by its pid", 5000)
