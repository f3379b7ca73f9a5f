"""What a saved file says of where its packets were seen: an interface is named only by the name
it had where the packets were captured, and a direction only when it is known. Files are read
back by tshark and capinfos."""

from __future__ import annotations

import socket
import subprocess

import dpkt
from dpkt import pcapng as ng

from divertgui.engine.address import Address
from divertgui.engine.pcapng import LINKTYPE_ETHERNET, CaptureReader, read_capture, write_capture
from divertgui.engine.saved_capture import save_rows
from divertgui.engine.store import CaptureStore, Verdict
from tests.unit.session_harness import Running, start_demo
from tests.unit.test_pcapng import BASE_NS, require_tool, sample_packets, tshark_fields
from tests.unit.test_processes import udp4


def capinfos_names(path) -> list[str]:
    """Each interface's name as capinfos shows it, in file order ("" for one the file names not)."""
    result = subprocess.run([require_tool("capinfos"), str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    names = []
    for line in result.stdout.splitlines():
        line = line.strip()
        if line.startswith("Interface #"):
            names.append("")
        elif line.startswith("Name =") and names:
            names[-1] = line.split("=", 1)[1].strip()
    return names


def interface_names(path) -> list[str]:
    """Each packet's interface name ("" for an interface the file names not: tshark would show its
    description in frame.interface_name instead)."""
    names = capinfos_names(path)
    return [names[int(row[0])] for row in tshark_fields(path, "frame.interface_id")]


def directions(path) -> list[str]:
    """Each packet's direction as its epb_flags say: "in", "out", or "" when they say none."""
    said = {1: "in", 2: "out"}
    return [said.get(int(row[0], 16) & 3, "?") if row[0] else "" for row in
            tshark_fields(path, "frame.packet_flags_direction")]


def this_machines_names() -> set[str]:
    return {name for _, name in socket.if_nameindex()}


def test_the_writer_names_no_interface_it_is_not_told_of(tmp_path):
    path = tmp_path / "unnamed.pcapng"
    packets = sample_packets(40)
    write_capture(path, packets)
    assert interface_names(path) == [""] * 40
    assert set(capinfos_names(path)) == {""}
    # The index is still kept, for a replay to give it back.
    assert [r.if_idx for r in read_capture(path)] == [a.if_idx for _, a, _, _ in packets]


def test_a_packets_own_interface_name_is_written_and_one_index_named_two_ways_gets_two_blocks(tmp_path):
    path = tmp_path / "own.pcapng"
    raw = udp4("10.0.0.1", 1000, "10.0.0.2", 53)
    write_capture(path, [(raw, Address(if_idx=2), BASE_NS, None, "veth0"),
                         (raw, Address(if_idx=2), BASE_NS + 1, None, "wg0"),
                         (raw, Address(if_idx=2), BASE_NS + 2, None, "veth0"),
                         (raw, Address(if_idx=3), BASE_NS + 3)])
    assert interface_names(path) == ["veth0", "wg0", "veth0", ""]
    assert capinfos_names(path) == ["veth0", "wg0", ""]


def test_a_saved_demo_capture_names_the_demo_networks_interfaces_not_this_machines(tmp_path):
    running = Running()
    try:
        start_demo(running, rate=1000.0)
        running.until(lambda: len(running.store) >= 60, "demo rows")
        running.post("stop")
        running.wait_for(lambda e: e["type"] == "state" and not e["running"], "stopped")
        path = tmp_path / "demo.pcapng"
        count = save_rows(running.store, path, range(len(running.store)))
    finally:
        running.stop()
    names = interface_names(path)
    assert len(names) == count
    assert set(names) <= {"demo-eth0", "demo-lo"} and "demo-eth0" in names
    assert not set(capinfos_names(path)) & this_machines_names()


def test_a_replayed_file_saved_again_keeps_its_interface_names(tmp_path):
    packets = sample_packets(50)
    names = {1: "lo", 2: "enp3s0", 3: "wlan7", 7: "tun9"}
    original = tmp_path / "original.pcapng"
    write_capture(original, packets, interface_name=lambda if_idx, loopback: names[if_idx])
    running = Running()
    try:
        running.post("start", source="replay", path=str(original), speed=0.0, filter="true", mode="sniff")
        running.wait_for(lambda e: e["type"] == "state" and not e["running"], "end of replay")
        again = tmp_path / "again.pcapng"
        save_rows(running.store, again, range(len(running.store)))
    finally:
        running.stop()
    assert interface_names(again) == interface_names(original) == [names[a.if_idx] for _, a, _, _ in packets]


def ethernet_file_without_directions(path, name: str = "veth0") -> list[bytes]:
    """A pcapng as dumpcap writes one on a Linux veth: Ethernet frames, no epb_flags; its packets."""
    raws = [udp4("10.77.0.1", 40000, "10.77.0.2", 7), udp4("10.77.0.2", 7, "10.77.0.1", 40000)]
    with open(path, "wb") as f:
        shb = ng.SectionHeaderBlockLE(opts=[ng.PcapngOptionLE(code=ng.PCAPNG_OPT_ENDOFOPT)])
        idb = ng.InterfaceDescriptionBlockLE(linktype=LINKTYPE_ETHERNET, snaplen=262144, opts=[
            ng.PcapngOptionLE(code=ng.PCAPNG_OPT_IF_NAME, data=name.encode()),
            ng.PcapngOptionLE(code=ng.PCAPNG_OPT_ENDOFOPT)])
        writer = ng.Writer(f, shb=shb, idb=idb)
        for number, raw in enumerate(raws):
            frame = bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=0x0800)) + raw
            writer.writepkt(frame, ts=1_700_000_000 + number)
    return raws


def test_a_file_that_says_no_direction_is_opened_and_saved_without_one(tmp_path):
    path = tmp_path / "ethernet.pcapng"
    raws = ethernet_file_without_directions(path)
    assert directions(path) == ["", ""], "the file itself records no direction"
    assert [r.outbound for r in read_capture(path)] == [None, None]
    running = Running()
    try:
        running.post("open", path=str(path))
        running.wait_for(lambda e: e["type"] == "state" and e["source"] == "file", "file opened")
        store = running.store
        assert [store.raw(row) for row in range(len(store))] == raws
        assert store.column("direction_unknown").tolist() == [True, True]
        assert store.column("outbound").tolist() == [False, False]
        assert [store.address(row).direction_known for row in range(2)] == [False, False]
        again = tmp_path / "again.pcapng"
        save_rows(store, again, range(len(store)))
    finally:
        running.stop()
    assert directions(again) == ["", ""]
    assert interface_names(again) == ["veth0", "veth0"]
    assert [r.outbound for r in read_capture(again)] == [None, None]


def test_a_file_with_directions_keeps_them_beside_packets_without(tmp_path):
    path = tmp_path / "mixed.pcapng"
    raw = udp4("10.0.0.1", 1000, "10.0.0.2", 53)
    write_capture(path, [(raw, Address(outbound=True), BASE_NS), (raw, Address(direction_known=False), BASE_NS + 1),
                         (raw, Address(), BASE_NS + 2)])
    assert directions(path) == ["out", "", "in"]
    store = CaptureStore()
    from divertgui.engine.saved_capture import load_into
    load_into(store, CaptureReader(path))
    assert store.column("direction_unknown").tolist() == [False, True, False]
    assert store.column("outbound").tolist() == [True, False, False]


def test_an_interface_index_named_two_ways_in_one_store_is_saved_unnamed(tmp_path):
    store = CaptureStore()
    raw = udp4("10.0.0.1", 1000, "10.0.0.2", 53)
    store.name_interfaces({2: "demo-eth0", 1: "demo-lo"})
    store.append_batch([raw, raw], [Address(if_idx=2), Address(if_idx=1)], Verdict.PASSED, BASE_NS)
    store.name_interfaces({2: "eth0"})      # a live capture after the demo, on this machine's index 2
    store.append(raw, Address(if_idx=2), Verdict.PASSED, BASE_NS + 1)
    path = tmp_path / "mixed.pcapng"
    save_rows(store, path, range(3))
    assert interface_names(path) == ["", "demo-lo", ""]
    store.clear()
    store.name_interfaces({2: "eth0"})
    store.append(raw, Address(if_idx=2), Verdict.PASSED, BASE_NS + 2)
    save_rows(store, path, range(1))
    assert interface_names(path) == ["eth0"]
