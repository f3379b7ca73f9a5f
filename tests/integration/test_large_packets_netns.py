"""Packets an edit makes too large to send, on loopback, whose 65536-byte MTU lets
NFQUEUE hand up packets of up to 65535 bytes: the one packet fails, the handle lives on."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
import time

import pytest

from divertgui.engine.address import Param
from divertgui.engine.backends import netlink
from divertgui.engine.handle import IPV4_MAX_SIZE, Divert, PacketTooLargeError
from divertgui.engine.rules import PayloadReplace, Pipeline
from divertgui.engine.rules.runner import run_conditions


def _udp_pair(port: int) -> tuple[socket.socket, socket.socket]:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    receiver.bind(("127.0.0.1", port))
    receiver.settimeout(5)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    return sender, receiver


def test_send_of_an_oversize_packet_raises_and_the_handle_keeps_working(netns):
    port = 40301
    with netns.entered():
        sender, receiver = _udp_pair(port)
        with Divert(f"outbound and udp.DstPort == {port}") as handle:
            sender.sendto(b"a" * 65000, ("127.0.0.1", port))
            packet = handle.recv(timeout=5)
            original = packet.raw
            assert len(original) == 65028

            packet.raw = original + b"x" * 600
            with pytest.raises(PacketTooLargeError) as beyond_ipv4:
                handle.send(packet)
            assert beyond_ipv4.value.size == 65628 and beyond_ipv4.value.limit == IPV4_MAX_SIZE
            assert "65628 bytes" in str(beyond_ipv4.value) and "65535" in str(beyond_ipv4.value)

            # Within IPv4's limit but beyond what a netlink attribute carries.
            packet.raw = original + b"x" * (65533 - len(original))
            with pytest.raises(PacketTooLargeError) as beyond_netlink:
                handle.send(packet)
            assert beyond_netlink.value.limit == netlink.MAX_VERDICT_PAYLOAD == 65531
            assert "NFQUEUE verdict" in str(beyond_netlink.value)
            with pytest.raises(PacketTooLargeError):
                handle.check_size(packet.raw)
            handle.check_size(original + b"x" * (netlink.MAX_VERDICT_PAYLOAD - len(original)))

            # The packet is still pending: its original bytes go on.
            packet.raw = original
            handle.send(packet)
            assert receiver.recv(70000) == b"a" * 65000

            # And the handle still diverts.
            sender.sendto(b"second", ("127.0.0.1", port))
            again = handle.recv(timeout=5)
            handle.send(again)
            assert receiver.recv(100) == b"second"
            stats = handle.stats()
        sender.close()
        receiver.close()
    assert stats["diverted"] == 2 and stats["sent"] == 2


def test_a_batch_of_large_edited_packets_goes_out_whole(netns):
    """Their verdicts together exceed a netlink socket's send buffer; each arrives edited."""
    port = 40307
    with netns.entered():
        sender, receiver = _udp_pair(port)
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        with Divert(f"outbound and udp.DstPort == {port}") as handle:
            for index in range(6):
                sender.sendto(bytes([48 + index]) * 60000, ("127.0.0.1", port))
            packets = []
            while len(packets) < 6:
                packets += handle.recv_batch(6 - len(packets), timeout=5)
            for packet in packets:
                packet.payload = packet.payload.replace(b"0", b"A")[:-1] + b"!"
                packet.recalculate_checksums()
            handle.send_batch(packets)
            arrived = sorted(receiver.recv(70000) for _ in range(6))
            stats = handle.stats()
        sender.close()
        receiver.close()
    assert arrived == sorted(bytes([48 + index]) * 59999 + b"!" if index else b"A" * 59999 + b"!"
                             for index in range(6))
    assert stats["sent"] == 6 and stats["modified"] == 6


FIRST = b"hello ZZ\n"
BULK = (b"." * 998 + b"ZZ") * 400


def _serve(server: socket.socket, got: dict, names: tuple[str, ...]) -> None:
    """Read each connection to its end (or a quiet second), keeping the bytes."""
    for name in names:
        conn, _ = server.accept()
        conn.settimeout(1.0)
        data = bytearray()
        try:
            while part := conn.recv(1 << 20):
                data += part
        except OSError:
            pass
        conn.close()
        got[name] = bytes(data)


@contextlib.contextmanager
def _server(port: int, names: tuple[str, ...]):
    """A TCP server on 127.0.0.1:port reading len(names) connections; yields what it got by name."""
    got: dict = {}
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    server.bind(("127.0.0.1", port))
    server.listen(2)
    serving = threading.Thread(target=_serve, args=(server, got, names))
    serving.start()
    try:
        yield got
    finally:
        serving.join(20)
        server.close()
    assert not serving.is_alive()


def _stalled_transfer(port: int, got: dict) -> None:
    """FIRST in a segment of its own, then BULK in full-size segments, until the server gives up."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    client.connect(("127.0.0.1", port))
    client.sendall(FIRST)
    time.sleep(0.2)
    client.sendall(BULK)
    # The grown full-size segments (and their retransmissions) cannot be
    # sent: the transfer stalls, and the server's read times out.
    deadline = time.monotonic() + 20
    while "big" not in got and time.monotonic() < deadline:
        time.sleep(0.1)
    client.close()


def _grow_rule(port: int) -> dict:
    return {"kind": "payload_replace", "filter": f"tcp.DstPort == {port}", "direction": "outbound",
            "find": "ZZ", "replace": "ZZZZ"}


def test_growing_large_tcp_segments_drops_and_counts_them_and_the_handle_survives(netns):
    port = 40303
    pipeline, stop, result, errors = Pipeline.from_dicts([_grow_rule(port)]), threading.Event(), {}, []
    with netns.entered(), _server(port, ("big", "small")) as got:
        handle = Divert(f"tcp.DstPort == {port} or tcp.SrcPort == {port}")
        handle.set_param(Param.QUEUE_LENGTH, 16384)

        def run():
            try:
                result.update(run_conditions(handle, pipeline, stop))
            except Exception as exc:  # surfaced below
                errors.append(exc)

        with handle:
            running = threading.Thread(target=run)
            running.start()
            try:
                _stalled_transfer(port, got)
                # The handle lives on: a small transfer still gets its edit.
                with socket.create_connection(("127.0.0.1", port), timeout=5) as second:
                    second.sendall(FIRST)
                while "small" not in got and running.is_alive():
                    time.sleep(0.05)
            finally:
                stop.set()
                running.join(20)
            stats = handle.stats()
    assert not errors, errors
    assert not running.is_alive()
    assert got["small"] == b"hello ZZZZ\n"
    assert got["big"].startswith(b"hello ZZZZ\n") and len(got["big"]) < len(FIRST) + len(BULK)
    # IP cannot carry the grown full-size segments: the rule drops them (and each retransmission) and counts them.
    assert result["send_failed"] == result["rules"][0]["send_failed"] == result["dropped"] > 0
    assert result["send_errors"] == 0 and result["held"] == 0
    # Every diverted packet had its verdict: sent, or dropped because it could not be.
    assert result["received"] == result["sent"] + result["dropped"] == stats["diverted"]
    assert stats["sent"] == result["sent"] and stats["dropped"] == result["dropped"]


def test_conditions_command_reports_the_packets_it_could_not_send(netns, tmp_path):
    from divertgui import cli
    from tests.integration.test_cli_netns import finish, start_cli

    port = 40309
    profile = tmp_path / "grow.json"
    profile.write_text(json.dumps({"name": "grow", "description": "", "rules": [_grow_rule(port)]}))
    process = start_cli(netns, "conditions", f"tcp.DstPort == {port} or tcp.SrcPort == {port}",
                        "--profile", str(profile), "--strict")
    try:
        with netns.entered(), _server(port, ("big",)) as got:
            _stalled_transfer(port, got)
    finally:
        code, out, err = finish(process, signal.SIGINT)
    failed = int(out.splitlines()[-1].rpartition("send failed ")[2])
    assert code == cli.EXIT_LOST, err
    assert failed > 0 and got["big"] == b"hello ZZZZ\n"
    assert f"divert: {failed} packets were dropped because a rule's edit made them too large to send" in err
    assert f"send_failed {failed}" in err.splitlines()[-1]


def test_a_rule_edit_beyond_what_a_verdict_carries_is_dropped_and_counted(netns):
    port = 40305
    rule = PayloadReplace(filter=f"udp.DstPort == {port}", find="Q", replace="Q" * 27)
    pipeline, stop, result = Pipeline([rule]), threading.Event(), {}
    with netns.entered():
        sender, receiver = _udp_pair(port)
        with Divert(f"outbound and udp.DstPort == {port}") as handle:
            running = threading.Thread(target=lambda: result.update(run_conditions(handle, pipeline, stop)))
            running.start()
            try:
                # 65507 bytes grow to 65533: IP carries them, a netlink verdict does not.
                sender.sendto(b"." * 65478 + b"Q", ("127.0.0.1", port))
                sender.sendto(b"small Q", ("127.0.0.1", port))
                assert receiver.recv(70000) == b"small " + b"Q" * 27
            finally:
                stop.set()
                running.join(20)
            stats = handle.stats()
        sender.close()
        receiver.close()
    assert result["send_failed"] == 1 and result["rules"][0]["send_failed"] == 0
    assert "65533 bytes" in result["first_send_failure"] and "65531" in result["first_send_failure"]
    assert result["received"] == result["sent"] == stats["diverted"] == 2
    assert stats["sent"] == 1 and stats["dropped"] == 1
