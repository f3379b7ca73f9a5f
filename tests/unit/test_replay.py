"""The replay source: a capture file's packets through the Backend interface, with WinDivert's semantics."""

from __future__ import annotations

import struct
import threading
import time

import pytest

from divertgui.engine.address import Address, Flag, Layer
from divertgui.engine.backends.replay import ReplayBackend
from divertgui.engine.pcapng import CaptureFileError, write_capture
from tests.unit.test_pcapng import BASE_NS, ipv4_udp, ipv6_tcp

SECOND = 1_000_000_000


class Outbound:
    """A filter with the compiled Filter's interface: `outbound`."""

    text = "outbound"

    def match(self, raw: bytes, address: Address) -> bool:
        return address.outbound


def capture(tmp_path, gaps_ns: list[int] | None = None, count: int = 12, name: str = "replay.pcapng"):
    """A file of `count` packets alternating IPv4 inbound / IPv6 outbound over three interfaces."""
    gaps_ns = gaps_ns or [1000] * count
    packets, ns = [], BASE_NS
    for i in range(count):
        ns += gaps_ns[i]
        outbound = i % 2 == 1
        raw = ipv6_tcp(i, i) if outbound else ipv4_udp(i, i)
        packets.append((raw, Address(outbound=outbound, loopback=i % 3 == 0, if_idx=1 + i % 3, ipv6=outbound), ns))
    path = tmp_path / name
    write_capture(path, packets)
    return path, packets


def opened(path, speed=0.0, filter=None, flags=Flag(0), layer=Layer.NETWORK) -> ReplayBackend:
    backend = ReplayBackend(path, speed=speed)
    backend.open(filter, layer, 0, flags, {})
    return backend


def drain(backend: ReplayBackend, limit: int = 10_000) -> list:
    got = []
    for _ in range(limit):
        batch = backend.recv_batch(255, timeout=5)
        if not batch:
            break
        got += batch
    return got


def test_as_fast_as_possible_gives_every_packet_with_its_address(tmp_path):
    path, packets = capture(tmp_path)
    backend = opened(path, layer=Layer.NETWORK_FORWARD)
    before = time.monotonic_ns()
    got = drain(backend)
    after = time.monotonic_ns()
    assert [c.raw for c in got] == [raw for raw, _, _ in packets]
    for captured, (_, address, _) in zip(got, packets):
        assert (captured.address.outbound, captured.address.loopback, captured.address.if_idx, captured.address.ipv6) == (
            address.outbound, address.loopback, address.if_idx, address.ipv6)
        assert captured.address.layer == Layer.NETWORK_FORWARD
        assert before <= captured.address.timestamp <= after
        assert not captured.address.sniffed
    assert len({c.ticket for c in got}) == len(got) and 0 not in {c.ticket for c in got}
    assert backend.finished
    assert backend.stats()["diverted"] == len(packets) == backend.stats()["pending"]
    backend.close()
    assert backend.stats()["dropped"] == len(packets)


def test_batches_respect_max_count(tmp_path):
    path, packets = capture(tmp_path, count=12)
    backend = opened(path)
    sizes = []
    while batch := backend.recv_batch(5, timeout=0):
        sizes.append(len(batch))
    assert sizes == [5, 5, 2]


def test_recorded_speed_waits_for_the_next_packet(tmp_path):
    path, _ = capture(tmp_path, gaps_ns=[0, 3600 * SECOND, 1], count=3)
    backend = opened(path, speed=1.0)
    assert len(backend.recv_batch(255, timeout=0)) == 1
    # The second packet was recorded an hour later: it is not there yet.
    assert backend.recv_batch(255, timeout=0.05) == []
    assert not backend.finished
    backend.close()


def test_speed_multiplier_scales_the_gaps(tmp_path):
    gaps = [0, SECOND, 2 * SECOND, SECOND // 2]
    path, _ = capture(tmp_path, gaps_ns=gaps, count=4)
    backend = opened(path, speed=100.0)
    got = []
    while len(got) < 4:
        got += backend.recv_batch(255, timeout=None)
    stamps = [c.address.timestamp for c in got]
    assert [b - a for a, b in zip(stamps, stamps[1:])] == [gap // 100 for gap in gaps[1:]]


def test_filter_decides_what_is_diverted(tmp_path):
    path, packets = capture(tmp_path)
    backend = opened(path, filter=Outbound())
    got = drain(backend)
    assert [c.raw for c in got] == [raw for raw, address, _ in packets if address.outbound]
    stats = backend.stats()
    assert stats["passed"] == len(packets) - len(got) and stats["read"] == len(packets)


def test_compiled_filter(tmp_path):
    from divertgui.engine.filter import compile_filter

    path, packets = capture(tmp_path)
    backend = opened(path, filter=compile_filter("udp and not outbound"))
    got = drain(backend)
    assert got and [c.raw for c in got] == [raw for raw, address, _ in packets if not address.outbound]


def test_verdicts_are_recorded(tmp_path):
    path, _ = capture(tmp_path, count=4)
    backend = opened(path)
    got = drain(backend)
    edited = bytearray(got[1].raw)
    edited[-1] ^= 0xFF
    backend.verdict(got[0].ticket, got[0].raw)
    backend.verdict(got[1].ticket, bytes(edited))
    backend.verdict(got[2].ticket, None)
    backend.inject(got[3].raw, got[3].address.copy(outbound=True))
    outcomes = backend.take_outcomes()
    assert [(o.kind, o.ticket) for o in outcomes] == [
        ("released", got[0].ticket), ("modified", got[1].ticket), ("dropped", got[2].ticket), ("injected", 0)]
    assert outcomes[1].raw == bytes(edited) and outcomes[2].raw is None and outcomes[3].address.outbound
    assert backend.take_outcomes() == []
    with pytest.raises(KeyError, match=f"packet {got[0].ticket}"):
        backend.verdict(got[0].ticket, got[0].raw)
    stats = backend.stats()
    assert (stats["released"], stats["modified"], stats["sent"], stats["dropped"], stats["injected"], stats["pending"]) == (
        1, 1, 2, 1, 1, 1)
    backend.close()
    assert backend.stats()["unanswered"] == 1 and backend.stats()["dropped"] == 2


def test_sniff_hands_copies_with_no_pending_verdict(tmp_path):
    path, packets = capture(tmp_path)
    backend = opened(path, flags=Flag.SNIFF)
    got = drain(backend)
    assert len(got) == len(packets)
    assert all(c.ticket == 0 and c.address.sniffed for c in got)
    assert backend.stats()["sniffed"] == len(packets) and backend.stats()["pending"] == 0


def test_drop_mode_hands_nothing_and_counts(tmp_path):
    path, packets = capture(tmp_path)
    backend = opened(path, flags=Flag.DROP, filter=Outbound())
    assert drain(backend) == []
    assert backend.stats()["dropped"] == len(packets) // 2
    assert backend.stats()["passed"] == len(packets) - len(packets) // 2


def test_shutdown(tmp_path):
    path, _ = capture(tmp_path)
    backend = opened(path)
    got = backend.recv_batch(1, timeout=0)
    backend.shutdown("recv")
    assert backend.recv_batch(255, timeout=None) == []
    backend.verdict(got[0].ticket, got[0].raw)
    backend.shutdown("send")
    with pytest.raises(RuntimeError, match="shut down"):
        backend.inject(got[0].raw, got[0].address)
    with pytest.raises(ValueError):
        backend.shutdown("sideways")


def test_close_wakes_a_waiting_receiver(tmp_path):
    path, _ = capture(tmp_path, gaps_ns=[0, 3600 * SECOND], count=2)
    backend = opened(path, speed=1.0)
    assert len(backend.recv_batch(255, timeout=0)) == 1
    results = []
    receiver = threading.Thread(target=lambda: results.append(backend.recv_batch(255, timeout=None)))
    receiver.start()
    backend.close()
    receiver.join(timeout=30)
    assert not receiver.is_alive() and results == [[]]


def test_corrupt_file_delivers_the_packets_before_the_fault_then_says_where(tmp_path):
    path, packets = capture(tmp_path, count=6)
    data = path.read_bytes()
    cut = len(data) - 10
    path.write_bytes(data[:cut])
    backend = opened(path)
    got = []
    with pytest.raises(CaptureFileError, match="cut short") as caught:
        while True:
            got += backend.recv_batch(2, timeout=1)
    assert [c.raw for c in got] == [raw for raw, _, _ in packets[:5]]
    assert caught.value.offset < cut and caught.value.count == 5
    assert backend.error is caught.value and backend.finished
    assert backend.recv_batch(255, timeout=None) == []


def test_missing_or_foreign_file_fails_at_open(tmp_path):
    with pytest.raises(CaptureFileError, match="cannot open"):
        opened(tmp_path / "absent.pcapng")
    foreign = tmp_path / "notes.txt"
    foreign.write_text("not a capture")
    with pytest.raises(CaptureFileError, match="not a pcap or pcapng file"):
        opened(foreign)


def test_non_ip_records_are_counted_as_skipped(tmp_path):
    ip = ipv4_udp(1, 1)
    arp = bytes.fromhex("ffffffffffff020000000001" "0806") + bytes(28)
    frames = [bytes.fromhex("020000000002020000000001" "0800") + ip, arp]
    data = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for frame in frames:
        data.append(struct.pack("<IIII", 1, 0, len(frame), len(frame)) + frame)
    path = tmp_path / "ether.pcap"
    path.write_bytes(b"".join(data))
    backend = opened(path)
    assert [c.raw for c in drain(backend)] == [ip]
    assert backend.skipped == {"Ethernet type 0x0806 (not IP)": 1}
    assert backend.stats()["skipped"] == 1


def test_negative_speed_is_refused(tmp_path):
    with pytest.raises(ValueError, match="speed"):
        ReplayBackend(tmp_path / "x.pcapng", speed=-1)


def test_through_a_divert_handle(tmp_path):
    import gc

    from divertgui.engine.handle import Divert
    from divertgui.engine.packet import Packet

    path, packets = capture(tmp_path, count=5)
    backend = ReplayBackend(path, speed=0)
    with Divert("true", backend=backend) as handle:
        received = handle.recv_batch(255, timeout=5)
        assert [p.raw for p in received] == [raw for raw, _, _ in packets]
        first, second, third, fourth, fifth = received
        handle.send(first)
        edited = bytearray(second.raw)
        edited[-1] ^= 0x55
        second.raw = bytes(edited)
        handle.send(second)
        handle.drop(third)
        handle.send(Packet(fourth.raw, fourth.address.copy(outbound=False)))   # a copy: injected, not released
        del fourth, received
        gc.collect()                                                            # never sent: dropped
        kinds = [(o.kind, o.raw) for o in backend.take_outcomes()]
        assert kinds[:4] == [("released", packets[0][0]), ("modified", bytes(edited)), ("dropped", None),
                             ("injected", packets[3][0])]
        assert kinds[4:] == [("dropped", None)]
        assert handle.stats()["pending"] == 1
        del fifth
    assert backend.stats()["dropped"] == 3 and backend.stats()["pending"] == 0


def test_a_record_with_a_corrupt_version_byte_is_delivered_and_counted_malformed(tmp_path):
    from divertgui.engine.filter import compile_filter

    good = ipv4_udp(1, 1)
    corrupt = bytes([0x95]) + good[1:]
    path = tmp_path / "corrupt.pcapng"
    write_capture(path, [(good, Address(), BASE_NS), (corrupt, Address(), BASE_NS + 1), (good, Address(), BASE_NS + 2)])
    backend = opened(path, filter=compile_filter("tcp"), flags=Flag.SNIFF)
    got = drain(backend)
    assert [c.raw for c in got] == [corrupt]
    stats = backend.stats()
    assert stats["malformed"] == 1 and stats["passed"] == 2
