"""A live capture in a process holding only the capture service's three capabilities.

    python -m tests.integration.hardened_capture CGROUP PORT

CGROUP is a path under the cgroup v2 mount whose sockets' creators the capture records.
Prints one JSON line once capturing ({"capabilities": CapEff as hex}); after each input line
"N", waits for N captured packets and prints {"pids": [...], "names": [...], "created": int};
on "stop", closes the capture and prints {"attached": the programs left on the cgroup}.
"""

from __future__ import annotations

import json
import os
import sys

from divertgui.engine.backends import bpf_syscall
from divertgui.engine.backends.cgroups import cgroup2_mount
from divertgui.service.hardening import keep_only_capture_capabilities, no_new_privileges
from tests.unit.session_harness import Running


def attached(cgroup: str) -> int:
    fd = os.open(os.path.join(cgroup2_mount(), cgroup), os.O_RDONLY | os.O_DIRECTORY)
    try:
        return len(bpf_syscall.query_cgroup(fd, bpf_syscall.ATTACH_INET_SOCK_CREATE))
    finally:
        os.close(fd)


def main(cgroup: str, port: int) -> None:
    no_new_privileges()
    keep_only_capture_capabilities()
    running = Running()
    running.post("start", source="live", mode="sniff", priority=0, layer="NETWORK",
                 filter=f"udp.DstPort == {port}", cgroup=cgroup)
    state = running.wait_for(lambda e: e["type"] in ("state", "error"), "state event")
    assert state["type"] == "state" and state["source"] == "live", state
    with open("/proc/self/status") as status:
        effective = next(line.split()[1] for line in status if line.startswith("CapEff:"))
    print(json.dumps({"capabilities": effective, "attached": attached(cgroup)}), flush=True)
    for line in sys.stdin:
        if line.strip() == "stop":
            running.post("stop")
            running.until(lambda: running.session._owners is None, "the capture's end")
            running.stop()
            print(json.dumps({"attached": attached(cgroup)}), flush=True)
            return
        count = int(line)
        running.until(lambda: len(running.store) >= count, "the packets")
        store = running.store
        processes = [store.process(row) for row in range(len(store))]
        print(json.dumps({"pids": [p.pid if p else 0 for p in processes],
                          "names": [p.name if p else "" for p in processes],
                          "created": running.session._owners.created}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
