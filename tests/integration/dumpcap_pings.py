"""A capture file as a Wireshark user makes one: dumpcap on one end of a veth pair while it pings
the other, which records Ethernet frames and no direction."""

from __future__ import annotations

import shutil
import subprocess

from tests.integration.conftest import VethPair, require

PACKETS = 4
# dumpcap says "Capturing on" a little before it sees packets: pings go on until it has PACKETS.
MAX_PINGS = 40


def record_pings(veth: VethPair, path) -> None:
    """dumpcap on `veth.a`'s device while `veth.a` pings `veth.b`: PACKETS ICMP echo requests and replies."""
    dumpcap = shutil.which("dumpcap")
    require(None if dumpcap else "dumpcap is not installed (Debian package wireshark-common)")
    process = veth.a.popen([dumpcap, "-i", veth.device, "-f", "icmp", "-c", str(PACKETS), "-a", "duration:20",
                            "-w", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    pings = None
    try:
        said = []
        for line in process.stderr:
            said.append(line)
            if line.startswith("Capturing on"):
                break
        else:
            raise AssertionError(f"dumpcap did not start: {''.join(said)}")
        pings = veth.a.popen(["ping", "-c", str(MAX_PINGS), "-i", "0.2", veth.b_v4], stdout=subprocess.DEVNULL)
        rest = process.communicate(timeout=30)[1]
        assert process.returncode == 0, "".join(said) + rest
    finally:
        for started in (process, pings):
            if started is not None and started.poll() is None:
                started.kill()
                started.wait(10)
