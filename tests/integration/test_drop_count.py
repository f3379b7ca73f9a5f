"""A DROP handle receives nothing, yet counts every packet its rule drops, while it drops them."""

import os

import pytest

from divertgui.engine.address import Flag
from divertgui.engine.handle import Divert
from tests.integration.conftest import icmp_echo, wait_until
from tests.integration.test_cli_netns import cli
from tests.unit.session_harness import Running

pytestmark = pytest.mark.netns

PINGS = 7


@pytest.mark.parametrize("version", [4, 6])
def test_a_drop_handle_counts_the_pings_it_drops(veth, backend, version):
    protocol, target = ("icmp", veth.b_v4) if version == 4 else ("icmpv6 and icmpv6.Type == 128", veth.b_v6)
    with veth.b.entered():
        with Divert(f"inbound and {protocol}", flags=Flag.DROP, backend=backend()) as handle:
            with veth.a.entered():
                replies = icmp_echo(target, PINGS, timeout=0.2)
            # Counted while the handle is open (the kernel's count is read again every so often).
            wait_until(lambda: handle.stats()["dropped"] >= PINGS, 5)
            open_count = handle.stats()["dropped"]
            received = handle.stats()["received"]
        closed_count = handle.stats()["dropped"]
    with veth.a.entered():
        replies_after = icmp_echo(target, 1, timeout=2)
    assert replies == 0
    assert open_count == PINGS
    assert closed_count == PINGS
    assert received == 0
    assert replies_after == 1


def test_drops_on_the_way_out_are_counted_once(netns, backend):
    with netns.entered():
        netns.ip("link", "set", "lo", "up")
        with Divert("icmp", flags=Flag.DROP, backend=backend()) as handle:
            replies = icmp_echo("127.0.0.1", PINGS, timeout=0.2)
        dropped = handle.stats()["dropped"]
    assert replies == 0
    assert dropped == PINGS


def test_a_drop_mode_capture_reports_its_count_while_it_runs_and_after_it_stops(netns, capture_cgroup):
    with netns.entered():
        # The session thread is created here, so it drops inside the namespace.
        running = Running()
    try:
        running.post("start", source="live", filter="icmp", mode="drop", priority=0, layer="NETWORK",
                     cgroup=capture_cgroup)
        state = running.wait_for(lambda e: e["type"] in ("state", "error"), "state event")
        with netns.entered():
            replies = icmp_echo("127.0.0.1", PINGS, timeout=0.2)
        live = running.wait_for(lambda e: e["type"] == "rows" and e["stats"].get("dropped") == PINGS,
                                f"a rows event counting {PINGS} drops")
        running.post("stop")
        running.wait_for(lambda e: e["type"] == "state" and not e["running"], "the stopped state")
        stopped = running.wait_for(lambda e: e["type"] == "rows", "a rows event after the stop")
    finally:
        running.stop()
    assert state["type"] == "state" and state["running"] and state["mode"] == "drop", state
    assert replies == 0
    assert live["count"] == 0
    assert stopped["stats"]["dropped"] == PINGS


def test_divert_list_shows_what_each_chain_of_a_drop_handle_dropped(netns):
    with netns.entered():
        with Divert("icmp", flags=Flag.DROP) as handle:
            replies = icmp_echo("127.0.0.1", PINGS, timeout=0.2)
            listing = cli(netns, "list")
    assert replies == 0
    assert listing.returncode == 0, listing.stderr
    rows = [line.split() for line in listing.stdout.splitlines()]
    header = next(row for row in rows if row[:2] == ["PID", "STATE"])
    mine = [dict(zip(header, row)) for row in rows if row[:2] == [str(os.getpid()), "running"]]
    assert {row["TARGET"] for row in mine} == {"drop"}
    assert {(row["IP"], row["HOOK"]) for row in mine} == {(ip, hook) for ip in ("v4", "v6")
                                                         for hook in ("input", "output")}
    # Loopback packets meet the handle once, on the way out.
    assert {(row["IP"], row["HOOK"]): int(row["PACKETS"]) for row in mine if row["PACKETS"] != "0"} == \
        {("v4", "output"): PINGS}
    assert handle.stats()["dropped"] == PINGS
