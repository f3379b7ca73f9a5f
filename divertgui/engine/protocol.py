"""The commands a Session takes and the events it emits.

Both are plain dicts of JSON-serialisable values (bytes travel as hex
strings), so that a Session can run in another, privileged process without
the models noticing. Every message has a "type" key naming it.

Commands (GUI -> Session)
    start         {"source": "demo"|"live"|"replay", "filter": str, "mode": "divert"|"sniff"|"drop",
                   "priority": int, "layer": "NETWORK"|"NETWORK_FORWARD",
                   "path": str (replay), "speed": float (replay; 0 = as fast as possible),
                   "rate": float (demo, packets per second), "seed": int (demo),
                   "workers": int (1..the cores) | "auto" (live divert: worker processes, one
                   queue each, each flow on one; divertgui.engine.pooled_capture),
                   "cgroup": str (live, Linux: a cgroup v2 path under the hierarchy's mount whose
                   sockets' creating processes the kernel records for the packets' process;
                   "" or absent: every process; engine/backends/socket_creators.py)}
    stop          {}
    open          {"path": str}         stop, empty the store and fill it with a capture file's
                  packets as they were saved: recorded times, direction, verdicts and the
                  original bytes of modified packets (divertgui.engine.saved_capture)
    pause         {"paused": bool}      stop appending to the store; packets still flow
    clear         {}                    empty the store
    set_rate      {"rate": float}       demo source rate
    set_intercept {"filter": str}       "" or "false" holds nothing
    set_hold_timeout {"seconds": float, "action": "forward"|"drop"}   0 = never
    set_hold_processes {"pids": [int]}  also hold every live packet of these processes' flows
    forward       {"ids": [int], "data": {id: hex}, "fix": bool}   data: edited bytes of some
                  of the ids; fix: recompute their lengths and checksums first (default False)
    forward_unmodified {"ids": [int]}
    drop          {"ids": [int]}
    forward_all   {}
    drop_all      {}
    inject        {"data": hex, "outbound": bool, "if_idx": int}
    set_rules     {"rules": [rule dict], "seed": int, "version": int}   network-condition and
                  rewrite rules (divertgui.engine.rules); a bad rule leaves the old ones in place.
                  Each rule dict may carry an "id" (text or int, unique in the list) naming the
                  rule across set_rules: a rule whose id and settings are unchanged goes on as it
                  was, wherever it moved; one whose settings changed keeps its counters and held
                  packets (held packets leave when they were due, new settings apply to packets
                  arriving afterwards); a rule whose id is gone, or a rule without an id, sends
                  on what it held at once. "seed" seeds the rules new to the list.
    start_events  {"layers": {"FLOW"|"SOCKET"|"REFLECT": filter str}, "cgroup": str}
                  watch FLOW, SOCKET and REFLECT events (divertgui.engine.event_capture), each
                  chosen layer with its filter ("" = everything), never blocking an operation;
                  cgroup: a cgroup v2 path under the hierarchy's mount whose processes alone the
                  FLOW and SOCKET layers watch ("" = every process). Replaces a running one.
    stop_events   {}
    shutdown      {}                    stop and end the session loop

Events (Session -> GUI), at most ~30 per second in all
    state         {"running": bool, "paused": bool, "source": str ("file" after open),
                   "mode": "divert"|"sniff"|"drop", "reason": str}
    rows          {"count": int, "generation": int, "stats": {...}, "delays_ms": [float]}
                  the store (emptied `generation` times) now has `count` rows; stats has
                  "rules" (one dict of counters per rule, in order), "rules_total",
                  "rules_version" (the version of the set_rules they count) and
                  "send_errors" (packets the rules made that could not be injected);
                  delays_ms: the delays lag rules gave since the previous rows event
    held          {"held": [{"id": int, "row": int}], "released": [int]}
    hello         {"version": int, "host": str, "pid": int, "live": str}   the first event of a capture
                  service (divertgui.service): its protocol version, host name, process id, and why it
                  cannot capture live traffic ("" when it can)
    processes     {"processes": [[int, int, str, str]]}   from a capture service, before the rows
                  that name them: each new process index of its packets with the pid, name and user
    interfaces    {"interfaces": [[int, str]]}   from a capture service, before the rows that came on
                  them: interface indexes with their names where the packets were captured (the
                  service's network namespace, the demo network, or the file replayed or opened)
    events        {"generation": int, "events": [record], "capturing": {layer name: filter str},
                   "cgroup": str}
                  FLOW, SOCKET and REFLECT events of the store emptied `generation` times (records
                  as divertgui.engine.event_records describes them; those of an opened file too),
                  and what the event capture watches now ({} when it is stopped)
    error         {"message": str, "where": str, "position": int (filter errors)}
                  where "rules": a rule could not be built; the message names the rule;
                  where "send": the first packet the rules made that could not be injected

Order of work on a diverted packet: the rules first, then the intercept
filter. A packet a rule delays meets the intercept filter when its delay is
over, so the list and the held queue show packets as the rules let them go
(dropped ones are counted by their rule, copies appear as injected), and the
user's hold time never counts towards a lag. Sniffed copies skip the rules.
On stop every packet the rules hold goes on at once; on set_rules, what the
removed rules hold.
"""

from __future__ import annotations

COMMANDS = frozenset({
    "start", "stop", "open", "pause", "clear", "set_rate", "set_intercept", "set_hold_timeout",
    "set_hold_processes", "forward", "forward_unmodified", "drop", "forward_all", "drop_all", "inject",
    "set_rules", "start_events", "stop_events", "shutdown",
})

EVENTS = frozenset({"hello", "state", "rows", "held", "error", "processes", "interfaces", "events"})


def worker_option(value, name: str = "workers") -> int:
    """The number of worker processes a start command's "workers" asks for; ValueError saying why not."""
    from divertgui.engine.worker_pool import worker_count
    cores = worker_count("auto")
    if value == "auto":
        return cores
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= cores:
        raise ValueError(f"{name} must be \"auto\" or a whole number from 1 to {cores} (the cores here), "
                         f"not {value!r}"[:200])
    return value


def command(kind: str, **fields) -> dict:
    if kind not in COMMANDS:
        raise ValueError(f"unknown session command {kind!r}")
    return {"type": kind, **fields}


def event(kind: str, **fields) -> dict:
    if kind not in EVENTS:
        raise ValueError(f"unknown session event {kind!r}")
    return {"type": kind, **fields}
