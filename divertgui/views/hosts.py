"""Several capture services behind one window, which sees them as one session.

Commands go to every host, or to the one a `host` field names (a store host
index); held packets' ids are numbered for the window, so that a verdict or an
edit goes back to the service that holds the packet. Events come back merged:
capture runs while any host runs, the statistics are summed, and a host that is
lost releases its held packets from the window's queue.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

# Commands that a file on this machine, or one packet, is about: the first host takes them.
FIRST_HOST_ONLY = frozenset({"open", "inject"})
HOLD_COMMANDS = frozenset({"forward", "forward_unmodified", "drop"})


def merged_stats(all_stats: list[dict]) -> dict:
    """Counters of several sessions as one: numbers summed; rule counters summed rule by rule
    when every host runs the same rules, else those of the first host."""
    if len(all_stats) == 1:
        return all_stats[0]
    merged: dict = {}
    for stats in all_stats:
        for key, value in stats.items():
            if key == "rules_version":
                merged.setdefault(key, value)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                merged[key] = merged.get(key, 0) + value
            elif isinstance(value, dict):
                merged[key] = merged_stats([merged.get(key, {}), value]) if key in merged else dict(value)
            elif key == "rules":
                merged[key] = _summed_rules(merged[key], value) if key in merged else [dict(r) for r in value]
            else:
                merged.setdefault(key, value)
    return merged


def _summed_rules(first: list, second: list) -> list:
    if [r.get("kind") for r in first] != [r.get("kind") for r in second]:
        return first
    return [merged_stats([a, b]) for a, b in zip(first, second)]


class Hosts(QObject):
    """The window's capture services (HostLinks: ServiceConnection, or the in-process SessionBridge), in order.

    `event` carries the merged events to the window; `changed` says that a
    host was added or its connection state moved.
    """

    event = Signal(object)
    changed = Signal()

    def __init__(self, store, parent=None):
        super().__init__(parent)
        self.store = store
        self.links: list = []
        self._states: dict[int, dict] = {}
        self._stats: dict[int, dict] = {}
        self._announced = (store.generation, 0)
        self._next_hold = 1
        self._holds: dict[int, tuple[object, int]] = {}        # window hold id -> (link, service hold id)
        self._hold_ids: dict[tuple[int, int], int] = {}         # (host index, service hold id) -> window id
        self.rules_of: dict[int, list[dict]] = {}               # host index -> the rules it was last sent
        # The host whose rule counters the merged statistics carry; None: every host's, summed.
        self.rules_host: int | None = None

    # -- the hosts ---------------------------------------------------------------------

    def add(self, link) -> None:
        self.links.append(link)
        link.event.connect(lambda event, link=link: self._receive(link, event))
        link.state_changed.connect(self.changed)
        self.changed.emit()

    def replace(self, old, new) -> None:
        """`new` takes `old`'s place (and host); `old` ends."""
        self._lost(old)
        old.event.disconnect()
        self.links[self.links.index(old)] = new
        new.event.connect(lambda event, link=new: self._receive(link, event))
        new.state_changed.connect(self.changed)
        old.shutdown()
        self.changed.emit()

    def link(self, index: int):
        """The link of store host index `index`, None when none."""
        return next((link for link in self.links if link.index == index), None)

    def names(self) -> list[tuple[int, str]]:
        return [(link.index, link.host) for link in self.links]

    def running(self) -> list[int]:
        """The host indexes whose capture runs."""
        return [link.index for link in self.links if self._states.get(link.index, {}).get("running")]

    # -- commands ------------------------------------------------------------------------

    def post(self, kind: str, host: int | None = None, **fields) -> None:
        """A command for every host, or for the host of store host index `host`."""
        links = self.links if host is None else [link for link in self.links if link.index == host]
        if kind in FIRST_HOST_ONLY and host is None:
            links = self.links[:1]
        if kind == "start" and fields.get("source") == "replay" and host is None:
            links = self.links[:1]
        if kind == "set_rules":
            for link in links:
                self.rules_of[link.index] = fields.get("rules") or []
        if kind in HOLD_COMMANDS:
            self._post_holds(kind, fields)
        elif kind == "clear" and host is None:
            if not any(link.shares_store for link in links):
                self.store.clear()
            for link in links:
                link.ask_clear()
        else:
            for link in links:
                link.post(kind, **fields)

    def _post_holds(self, kind: str, fields: dict) -> None:
        data = {int(key): value for key, value in (fields.get("data") or {}).items()}
        by_link: dict[int, tuple[object, list[int], dict]] = {}
        for window_id in fields.get("ids", ()):
            held = self._holds.get(int(window_id))
            if held is None:
                continue
            link, service_id = held
            entry = by_link.setdefault(id(link), (link, [], {}))
            entry[1].append(service_id)
            if int(window_id) in data:
                entry[2][service_id] = data[int(window_id)]
        for link, ids, edits in by_link.values():
            extra = {"data": edits} if kind == "forward" else {}
            if kind == "forward" and "fix" in fields:
                extra["fix"] = fields["fix"]
            link.post(kind, ids=ids, **extra)

    # -- events ----------------------------------------------------------------------------

    def _receive(self, link, event: dict) -> None:
        kind = event.get("type")
        if kind == "state":
            self._states[link.index] = event
            event = self._merged_state()
        elif kind == "rows":
            event = self._merged_rows(link, event)
            if event is None:
                return
        elif kind == "held":
            event = self._window_holds(link, event)
        elif kind == "events":
            event = dict(event, host=link.index, host_name=link.host)
        elif kind == "error" and event.get("where") == "connection":
            self._lost(link)
            event = dict(event, host=link.index)
        elif kind == "error" and len(self.links) > 1 and event.get("where") != "rules":
            event = dict(event, message=f"{link.host}: {event.get('message', '')}")
        self.event.emit(event)

    def _merged_state(self) -> dict:
        hosts = [(link.host, self._states[link.index]) for link in self.links if link.index in self._states]
        states = [state for _, state in hosts]
        running = [state for state in states if state.get("running")]
        reasons = list(dict.fromkeys(state.get("reason") for state in states if state.get("reason")))
        notices = [f"{host}: {state['notice']}" if len(self.links) > 1 else state["notice"]
                   for host, state in hosts if state.get("running") and state.get("notice")]
        first = (running or states)[0]
        return {"type": "state", "running": bool(running),
                "paused": bool(running) and all(state.get("paused") for state in running),
                "source": first.get("source", ""), "mode": first.get("mode", ""), "reason": "; ".join(reasons),
                "notice": "; ".join(notices)}

    def _merged_rows(self, link, event: dict) -> dict | None:
        generation, count = int(event.get("generation", 0)), int(event.get("count", 0))
        if generation < self._announced[0]:
            return None
        if generation == self._announced[0]:
            count = max(count, self._announced[1])
        self._announced = (generation, count)
        self._stats[link.index] = event.get("stats") or {}
        stats = [self._stats[other.index] for other in self.links if other.index in self._stats]
        merged = merged_stats(stats)
        chosen = self._stats.get(self.rules_host)
        if chosen is not None and len(stats) > 1:
            merged = dict(merged, **{key: chosen[key] for key in ("rules", "rules_total", "rules_version")
                                     if key in chosen})
        return dict(event, count=count, generation=generation, stats=merged)

    def _window_holds(self, link, event: dict) -> dict:
        held = []
        for announced in event.get("held") or ():
            key = (link.index, int(announced["id"]))
            window_id = self._hold_ids.get(key)
            if window_id is None:
                window_id = self._hold_ids[key] = self._next_hold
                self._holds[window_id] = (link, key[1])
                self._next_hold += 1
            held.append(dict(announced, id=window_id))
        released = []
        for service_id in event.get("released") or ():
            window_id = self._hold_ids.pop((link.index, int(service_id)), None)
            if window_id is not None:
                self._holds.pop(window_id, None)
                released.append(window_id)
        return dict(event, held=held, released=released)

    def _lost(self, link) -> None:
        """A host gone releases what it held (by its hold policy): the window's queue lets go too."""
        gone = [window_id for window_id, (owner, _) in self._holds.items() if owner is link]
        for window_id in gone:
            _, service_id = self._holds.pop(window_id)
            self._hold_ids.pop((link.index, service_id), None)
        self._stats.pop(link.index, None)
        if gone:
            self.event.emit({"type": "held", "held": [], "released": gone})

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        return all([link.shutdown(timeout_ms) for link in self.links])
