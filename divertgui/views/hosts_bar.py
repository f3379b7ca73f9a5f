"""What the window shows of its capture services' hosts: a selector that scopes
capture and intercept commands, one that scopes the rules, each host's state in
the status bar, a Reconnect menu, and the Host column and the chart by host once
there are several."""

from __future__ import annotations

from typing import Callable

from PySide6.QtWidgets import QComboBox, QLabel, QMenu

from divertgui.models.packet_table import HOST
from divertgui.views.host_link import CONNECTING, LOST

ALL_HOSTS = "All hosts"
# Commands the capture toolbar's host selector scopes; set_rules follows the rules panel's.
CAPTURE_COMMANDS = frozenset({"start", "stop", "pause", "set_rate", "set_intercept", "set_hold_timeout",
                              "forward_all", "drop_all", "inject", "start_events", "stop_events"})


class HostSelector(QComboBox):
    """"All hosts", then each host by name; `host()` is the chosen store host index, None for all."""

    def __init__(self, name: str, parent=None):
        super().__init__(parent)
        self.setObjectName(name)
        self.setToolTip("The host these commands go to")

    def fill(self, names: list[tuple[int, str]]) -> None:
        chosen = self.host()
        self.blockSignals(True)
        self.clear()
        self.addItem(ALL_HOSTS, None)
        for index, name in names:
            self.addItem(name, index)
        found = self.findData(chosen)
        self.setCurrentIndex(found if chosen is not None and found >= 0 else 0)
        self.blockSignals(False)
        self.setVisible(len(names) > 1)

    def host(self) -> int | None:
        return self.currentData()

    def choose(self, host: int | None) -> None:
        found = self.findData(host)
        self.setCurrentIndex(found if host is not None and found >= 0 else 0)


class HostsBar:
    def __init__(self, hosts, window, reconnect: Callable[[object], None], reconnect_lost: Callable[[], None]):
        self.hosts = hosts
        self.window = window
        self._reconnect = reconnect
        self._reconnect_lost = reconnect_lost
        self.capture = HostSelector("capture_host", window)
        self._capture_action = window.capture_toolbar.insertWidget(window.capture_toolbar.actions()[3],
                                                                   self.capture)
        # The Events view's Start and Stop go where the capture toolbar's selector says.
        window.events_view.chosen_host = self.capture.host
        self.capture.currentIndexChanged.connect(window.events_view.show_state)
        self.rules = HostSelector("rules_host", window.rules_panel)
        self.rules.currentIndexChanged.connect(self._rules_host_chosen)
        window.rules_panel.layout().insertWidget(0, self.rules)
        self.status = QLabel(window)
        self.status.setObjectName("status_hosts")
        self.status.setContentsMargins(6, 0, 6, 0)
        window.statusBar().insertPermanentWidget(0, self.status)
        self.reconnect_menu = QMenu("&Reconnect", window)
        self.reconnect_menu.aboutToShow.connect(self._fill_reconnect_menu)
        hosts.changed.connect(self.refresh)
        self.refresh()

    def scope(self, kind: str, fields: dict) -> dict:
        """`fields` with the host the selectors name for `kind`, unless the command names one."""
        if "host" in fields:
            return fields
        selector = self.rules if kind == "set_rules" else self.capture if kind in CAPTURE_COMMANDS else None
        host = selector.host() if selector is not None else None
        return fields if host is None else dict(fields, host=host)

    def _rules_host_chosen(self) -> None:
        """The rules panel shows (and edits) the rules of the host chosen; for all hosts, what it shows."""
        host = self.rules.host()
        self.hosts.rules_host = host
        if host is not None:
            self.window.rules_model.restore(self.hosts.rules_of.get(host, []))

    def refresh(self) -> None:
        names = self.hosts.names()
        several = len(names) > 1
        self.capture.fill(names)
        self._capture_action.setVisible(several)
        self.rules.fill(names)
        if several:
            self.window.table.setColumnHidden(HOST, False)
            self.window.charts.show_hosts()
            self.window.events_view.show_hosts()
        self.status.setText(self.describe())

    def describe(self) -> str:
        """Each host's connection, shown while there are several or one is not connected."""
        links = self.hosts.links
        parts = []
        for link in links:
            state = link.state
            if state == CONNECTING:
                parts.append(f"connecting to {link.host}…")
            elif state == LOST:
                parts.append(f"{link.host}: lost")
            else:
                parts.append(f"{link.host} ●")
        if len(links) == 1 and links[0].state not in (CONNECTING, LOST):
            return ""
        return " · ".join(parts)

    def _fill_reconnect_menu(self) -> None:
        menu = self.reconnect_menu
        menu.clear()
        if len(self.hosts.links) > 1:
            every = menu.addAction("&Every Lost Host", self._reconnect_lost)
            every.setEnabled(any(link.lost for link in self.hosts.links))
            menu.addSeparator()
        for link in self.hosts.links:
            action = menu.addAction(link.host or "this window",
                                    lambda link=link: self._reconnect(link))
            action.setEnabled(link.lost)
