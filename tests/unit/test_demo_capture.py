"""resources/demo.pcapng is what `python -m divertgui.engine.backends.demo_capture` writes, and tshark reads it."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import dpkt
import pytest

from divertgui.engine.backends import demo_capture
from divertgui.engine.pcapng import read_capture

COMMITTED = pathlib.Path(__file__).resolve().parents[2] / "resources" / "demo.pcapng"


def tshark() -> str:
    path = shutil.which("tshark")
    if path is None:
        message = "tshark is not installed (Debian package: tshark)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def tshark_fields(path, *fields: str, display_filter: str | None = None, options=()) -> list[list[str]]:
    args = [tshark(), "-r", os.fspath(path), "-T", "fields", "-E", "separator=/t", *options]
    if display_filter:
        args += ["-Y", display_filter]
    for field in fields:
        args += ["-e", field]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [line.split("\t") for line in result.stdout.splitlines()]


def essentials(records):
    return [(r.raw, r.timestamp_ns, r.if_idx, r.outbound, r.loopback) for r in records]


@pytest.fixture(scope="module")
def committed():
    assert COMMITTED.is_file(), f"{COMMITTED} is missing: run python -m divertgui.engine.backends.demo_capture {COMMITTED}"
    return read_capture(COMMITTED)


def test_the_committed_file_is_what_the_module_writes(tmp_path, committed):
    path = tmp_path / "demo.pcapng"
    assert demo_capture.main([str(path)]) == 0
    written = read_capture(path)
    assert 200 <= len(written) <= 1000
    regenerate = f"regenerate it with python -m divertgui.engine.backends.demo_capture {COMMITTED}"
    assert essentials(written) == essentials(committed), f"{COMMITTED} has other packets: {regenerate}"
    # Nothing in the file depends on the machine that wrote it, interface names included.
    assert path.read_bytes() == COMMITTED.read_bytes(), f"{COMMITTED} differs in its blocks: {regenerate}"


def test_the_interfaces_have_the_demo_network_names_whatever_the_host(committed):
    rows = tshark_fields(COMMITTED, "frame.interface_name", "frame.interface_id")
    names = {(record.loopback, name) for record, (name, _) in zip(committed, rows)}
    assert names == {(True, "demo-lo"), (False, "demo-eth0")}


def test_tshark_reads_every_packet_with_its_direction(committed):
    rows = tshark_fields(COMMITTED, "frame.number", "frame.packet_flags_direction", "frame.len")
    assert len(rows) == len(committed)
    for record, (number, direction, length) in zip(committed, rows):
        assert int(direction, 16) == (2 if record.outbound else 1), f"frame {number}"
        assert int(length) == len(record.raw), f"frame {number}"


def test_tshark_finds_every_checksum_good(committed):
    checks = ["-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE"]
    transports = ("tcp", "udp", "icmp", "icmpv6")
    good = " or ".join(f"{name}.checksum.status == 1" for name in transports)
    rows = tshark_fields(COMMITTED, "frame.number", display_filter=good, options=checks)
    assert len(rows) == len(committed)


def test_tshark_finds_nothing_malformed_below_the_application_layer():
    # The demo's TLS Client Hello carries random bytes where extensions belong,
    # so Wireshark's TLS dissector complains about it; what the engine parses must be clean.
    problems = "(_ws.malformed or _ws.expert.severity >= error) and not tls.handshake.type == 1"
    assert tshark_fields(COMMITTED, "frame.number", display_filter=problems) == []


def test_the_capture_shows_every_kind_of_demo_traffic(committed):
    protocols = {row[0] for row in tshark_fields(COMMITTED, "frame.protocols")}
    seen = set().union(*(p.split(":") for p in protocols))
    assert {"ip", "ipv6", "tcp", "udp", "icmp", "dns", "http", "tls", "quic"} <= seen
    assert any(record.loopback for record in committed)
    assert {record.outbound for record in committed} == {True, False}


def test_every_tcp_connection_in_the_file_is_complete(committed):
    opened, closed = set(), {}
    for record in committed:
        ip = (dpkt.ip.IP if record.raw[0] >> 4 == 4 else dpkt.ip6.IP6)(record.raw)
        if not isinstance(ip.data, dpkt.tcp.TCP):
            continue
        tcp = ip.data
        ends = frozenset({(ip.src, tcp.sport), (ip.dst, tcp.dport)})
        if tcp.flags & dpkt.tcp.TH_SYN and not tcp.flags & dpkt.tcp.TH_ACK:
            opened.add(ends)
        if tcp.flags & dpkt.tcp.TH_FIN:
            closed.setdefault(ends, set()).add((ip.src, tcp.sport))
    assert len(opened) >= 10
    unfinished = [ends for ends in opened if len(closed.get(ends, ())) != 2]
    assert unfinished == []


def test_the_seed_decides_the_packets():
    first = demo_capture.record_demo(seed=7, start_seconds=0.3)
    again = demo_capture.record_demo(seed=7, start_seconds=0.3)
    other = demo_capture.record_demo(seed=8, start_seconds=0.3)
    assert [(raw, wall) for raw, _, wall in first] == [(raw, wall) for raw, _, wall in again]
    assert [raw for raw, _, _ in first] != [raw for raw, _, _ in other]


def test_an_unwritable_path_is_a_clear_error(tmp_path, capsys):
    target = tmp_path / "no such folder" / "demo.pcapng"
    assert demo_capture.main([str(target)]) == 1
    error = capsys.readouterr().err
    assert str(target) in error and "No such file or directory" in error
