"""Packets an edit makes too large to send, on loopback, whose 65536-byte MTU lets
NFQUEUE hand up packets of up to 65535 bytes: a TCP segment goes out split; any
other packet fails alone, and the handle lives on."""

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
from divertgui.engine.errors import PacketTooLargeError
from divertgui.engine.handle import IPV4_MAX_SIZE, Divert
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
# About 4 MB sent at once: the loopback hands it over in segments of up to ~65,000 bytes,
# which the rule grows past what one verdict (and IP's length field) carries.
BULK = (b"." * 998 + b"ZZ") * 4000


def _serve(server: socket.socket, got: dict, names: tuple[str, ...]) -> None:
    """Read each connection to its end (or a quiet 10 seconds), keeping the bytes."""
    for name in names:
        conn, _ = server.accept()
        conn.settimeout(10.0)
        data = bytearray()
        try:
            while part := conn.recv(1 << 20):
                data += part
        except OSError:
            pass
        conn.close()
        got[name] = bytes(data)


@contextlib.contextmanager
def _server(family: int, host: str, port: int, names: tuple[str, ...]):
    """A TCP server on host:port reading len(names) connections; yields what it got by name."""
    got: dict = {}
    server = socket.socket(family)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    server.bind((host, port))
    server.listen(2)
    serving = threading.Thread(target=_serve, args=(server, got, names))
    serving.start()
    try:
        yield got
    finally:
        serving.join(60)
        server.close()
    assert not serving.is_alive()


def _transfer(family: int, host: str, port: int) -> None:
    """FIRST in a segment of its own, then BULK in full-size segments, then the end of the stream."""
    with socket.socket(family) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        client.settimeout(60)
        client.connect((host, port))
        client.sendall(FIRST)
        time.sleep(0.2)
        client.sendall(BULK)
        client.shutdown(socket.SHUT_WR)
        client.recv(1)      # the server's close


def _grow_rule(port: int, replace: str = "ZZZZ") -> dict:
    return {"kind": "payload_replace", "filter": f"tcp.DstPort == {port}", "direction": "outbound",
            "find": "ZZ", "replace": replace}


def _undone(data: bytes, replace: bytes = b"ZZZZ") -> bytes:
    return data.replace(replace, b"ZZ")


# Grown past one verdict; or kept to its length, or shrunk, in segments the kernel handed
# over cut, whose verdicts cannot carry edited bytes.
@pytest.mark.parametrize("family, host, replace", [(socket.AF_INET, "127.0.0.1", "ZZZZ"),
                                                   (socket.AF_INET6, "::1", "ZZZZ"),
                                                   (socket.AF_INET, "127.0.0.1", "YY"),
                                                   (socket.AF_INET, "127.0.0.1", "Z")],
                         ids=["ipv4", "ipv6", "ipv4-same-length", "ipv4-shorter"])
def test_edited_full_size_tcp_segments_go_out_and_the_transfer_completes(netns, family, host, replace):
    port = 40303
    pipeline, stop, result, errors = Pipeline.from_dicts([_grow_rule(port, replace)]), threading.Event(), {}, []
    with netns.entered(), _server(family, host, port, ("big",)) as got:
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
                _transfer(family, host, port)
            finally:
                stop.set()
                running.join(20)
            stats = handle.stats()
    assert not errors, errors
    assert not running.is_alive()
    assert got["big"].startswith(b"hello " + replace.encode() + b"\n")
    assert _undone(got["big"], replace.encode()) == FIRST + BULK
    assert result["send_failed"] == result["rules"][0]["send_failed"] == 0
    assert result["send_errors"] == 0 and result["held"] == 0 and result["dropped"] == 0
    # Segments too large for one verdict went out as that verdict plus injected segments; those
    # the kernel handed over cut (beyond what a netlink attribute carries) as injected segments only.
    assert stats["injected"] >= (2 if len(replace) > 2 else 1) * stats["dropped"] > 0
    assert result["received"] == result["sent"] == stats["diverted"] == stats["sent"] + stats["dropped"]


def test_conditions_command_carries_a_transfer_its_profile_grows_past_one_verdict(netns, tmp_path):
    from divertgui import cli
    from tests.integration.test_cli_netns import finish, start_cli

    port = 40309
    profile = tmp_path / "grow.json"
    profile.write_text(json.dumps({"name": "grow", "description": "", "rules": [_grow_rule(port)]}))
    process = start_cli(netns, "conditions", f"tcp.DstPort == {port} or tcp.SrcPort == {port}",
                        "--profile", str(profile), "--strict")
    try:
        with netns.entered(), _server(socket.AF_INET, "127.0.0.1", port, ("big",)) as got:
            _transfer(socket.AF_INET, "127.0.0.1", port)
    finally:
        code, out, err = finish(process, signal.SIGINT)
    assert code == cli.EXIT_OK, err
    assert out.splitlines()[-1].endswith("send failed 0")
    assert "too large to send" not in err
    assert _undone(got["big"]) == FIRST + BULK and got["big"] != FIRST + BULK


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
