"""Process attribution: a packet's local flow, the kernel's socket tables and the sockets' owners."""

from __future__ import annotations

import os
import socket
import struct

import numpy as np

from divertgui.engine.processes import FlowOwners, ProcessList, flow_key

MAPPED = bytes(10) + b"\xff\xff"


def udp4(src: str, sport: int, dst: str, dport: int, payload: bytes = b"x") -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip + udp


def tcp4(src: str, sport: int, dst: str, dport: int) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 0, 0, 5 << 4, 0x02, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip + tcp


def udp6(src: str, sport: int, dst: str, dport: int, payload: bytes = b"x") -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    return struct.pack("!IHBB", 6 << 28, len(udp), 17, 64) + socket.inet_pton(socket.AF_INET6, src) \
        + socket.inet_pton(socket.AF_INET6, dst) + udp


def test_the_direction_decides_which_side_is_local():
    raw = udp4("10.0.0.1", 1000, "10.0.0.2", 53)
    local, remote = MAPPED + bytes([10, 0, 0, 1]), MAPPED + bytes([10, 0, 0, 2])
    assert flow_key(raw, outbound=True) == (17, local, 1000, remote, 53)
    assert flow_key(raw, outbound=False) == (17, remote, 53, local, 1000)
    six = udp6("fd00::1", 5, "fd00::2", 6)
    assert flow_key(six, True) == (17, socket.inet_pton(socket.AF_INET6, "fd00::1"), 5,
                                   socket.inet_pton(socket.AF_INET6, "fd00::2"), 6)


def test_fragments_icmp_and_short_packets_have_no_flow():
    raw = bytearray(udp4("10.0.0.1", 1000, "10.0.0.2", 53))
    raw[6] = 0x20                      # more fragments
    assert flow_key(bytes(raw), True) is None
    icmp = bytearray(udp4("10.0.0.1", 1, "10.0.0.2", 2))
    icmp[9] = 1
    assert flow_key(bytes(icmp), True) is None
    assert flow_key(b"\x45" + bytes(10), True) is None


def test_bound_and_connected_sockets_of_this_process_own_their_packets_both_ways():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ours, \
            socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as ours6:
        ours.bind(("127.0.0.1", 0))
        ours6.bind(("::1", 0))
        port, port6 = ours.getsockname()[1], ours6.getsockname()[1]
        processes = ProcessList()
        owners = FlowOwners(processes)
        packets = [udp4("127.0.0.1", port, "127.0.0.1", 9), udp4("127.0.0.1", 9, "127.0.0.1", port),
                   udp6("::1", port6, "::1", 9), udp4("127.0.0.1", 9, "127.0.0.1", 9)]
        indexes = owners.indexes(packets, [True, False, True, True])
        assert indexes[0] == indexes[1] == indexes[2] != 0
        assert indexes[3] == 0, "no socket has port 9"
        process = processes.get(indexes[0])
        assert process.pid == os.getpid() and process.name
        assert owners.lookups == 1, "the new flows of one batch are looked up together"
        assert owners.indexes(packets[:1], [True]).tolist() == indexes[:1].tolist() and owners.lookups == 1
        owners.close()


def test_a_tcp_listener_owns_a_new_connection_until_it_accepts_it_and_the_client_its_side():
    processes = ProcessList()
    owners = FlowOwners(processes)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            client_port = client.getsockname()[1]
            syn = tcp4("127.0.0.1", client_port, "127.0.0.1", port)
            indexes = owners.indexes([syn, syn], [True, False])
            assert indexes[0] != 0 and indexes[0] == indexes[1]
            assert processes.get(indexes[0]).pid == os.getpid()
    owners.close()


def test_a_flow_whose_socket_closed_is_looked_up_again():
    processes = ProcessList()
    owners = FlowOwners(processes)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ours:
        ours.bind(("127.0.0.1", 0))
        port = ours.getsockname()[1]
        raw = udp4("127.0.0.1", port, "127.0.0.1", 9)
        assert owners.indexes([raw], [True])[0] != 0
    owners.refresh(now=1e12)
    assert owners.flow_count() == 0
    assert owners.indexes([raw], [True]).tolist() == [0]
    owners.close()


def test_the_process_list_gives_each_process_one_small_index():
    processes = ProcessList()
    from divertgui.engine.processes import Process
    a, b = Process(10, "curl", "root"), Process(11, "nc", "root")
    assert processes.intern(a) == 1 and processes.intern(b) == 2 and processes.intern(a) == 1
    assert a.label() == "curl (10)" and Process(12, "", "").label() == "? (12)"
    assert processes.get(0) is None and processes.get(2) == b and processes.indexes_of_pid(10) == [1]


def test_process_totals_count_each_process_once_with_its_flows_bytes_and_held_packets():
    from divertgui.engine.address import Address
    from divertgui.engine.process_totals import process_totals
    from divertgui.engine.processes import Process
    from divertgui.engine.store import CaptureStore, Verdict
    store = CaptureStore()
    curl = store.processes.intern(Process(10, "curl", "root"))
    renamed = store.processes.intern(Process(10, "curl-renamed", "root"))
    nc = store.processes.intern(Process(11, "nc", "user"))
    raws = [udp4("10.0.0.1", 1000, "10.0.0.2", 53), udp4("10.0.0.2", 53, "10.0.0.1", 1000),
            udp4("10.0.0.1", 1001, "10.0.0.2", 53), udp4("10.0.0.1", 2000, "10.0.0.3", 80),
            udp4("10.0.0.9", 1, "10.0.0.8", 2)]
    addresses = [Address(outbound=True), Address(outbound=False), Address(outbound=True), Address(outbound=True),
                 Address(outbound=False)]
    store.append_batch(raws, addresses, [Verdict.PASSED, Verdict.PASSED, Verdict.HELD, Verdict.HELD,
                                         Verdict.PASSED], 0, [curl, renamed, curl, nc, 0])
    totals = process_totals(store)
    assert list(totals.pids) == [10, 11] and totals.names == ["curl-renamed", "nc"]
    assert list(totals.packets) == [3, 1] and list(totals.flows) == [2, 1] and list(totals.held) == [1, 1]
    assert totals.bytes_in[0] == len(raws[1]) and totals.bytes_out[0] == len(raws[0]) + len(raws[2])
    assert totals.unattributed == 1
    assert process_totals(store, np.array([3])).pids.tolist() == [11]


def test_refresh_checks_a_bounded_number_of_flows_each_time_and_all_in_turn(monkeypatch):
    from divertgui.engine import processes as module
    monkeypatch.setattr(module, "REFRESH_FLOWS", 2)
    owners = FlowOwners(ProcessList())
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(5)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        raws = [udp4("127.0.0.1", s.getsockname()[1], "127.0.0.1", 9) for s in sockets]
        assert 0 not in owners.indexes(raws, [True] * 5)
        for s in sockets:
            s.close()
        remaining = []
        for turn in range(3):
            owners.refresh(now=1e12 * (turn + 1))
            remaining.append(owners.flow_count())
        assert remaining == [3, 1, 0]
    finally:
        for s in sockets:
            s.close()
        owners.close()


def _flow_event(event, pid: int, endpoint: int, local: str, lport: int, remote: str, rport: int, protocol=17):
    from divertgui.engine.address import Layer
    from divertgui.engine.event_records import EventRecord, FlowData
    local_int = int.from_bytes(MAPPED + socket.inet_aton(local), "big")
    remote_int = int.from_bytes(MAPPED + socket.inet_aton(remote), "big")
    layer = Layer.FLOW if event.name.startswith("FLOW") else Layer.SOCKET
    return EventRecord(1, layer, event, pid, "sender", "alice",
                       FlowData(endpoint, 0, protocol, local_int, lport, remote_int, rport, True, False, False))


def test_a_flow_learned_from_its_event_needs_no_socket_lookup_and_leaves_after_its_end():
    from divertgui.engine.address import Event
    owners = FlowOwners(ProcessList())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ours:
        ours.bind(("127.0.0.1", 0))
        port = ours.getsockname()[1]
        # The events name another process than the socket's owner (this one): the table takes theirs.
        out = udp4("127.0.0.1", port, "127.0.0.2", 53)
        other = udp4("127.0.0.1", port, "127.0.0.3", 53)
        tcp = tcp4("10.9.9.1", 40002, "10.9.9.2", 80)
        owners.learn([_flow_event(Event.FLOW_ESTABLISHED, 4242, 7, "127.0.0.1", port, "127.0.0.2", 53),
                      _flow_event(Event.FLOW_ESTABLISHED, 4242, 7, "127.0.0.1", port, "127.0.0.3", 53),
                      _flow_event(Event.SOCKET_ACCEPT, 4243, 8, "10.9.9.1", 40002, "10.9.9.2", 80, protocol=6),
                      _flow_event(Event.FLOW_ESTABLISHED, 0, 9, "127.0.0.1", port, "127.0.0.4", 53)])
        found = owners.indexes([out, other, tcp], [True, True, True]).tolist()
        assert [owners.processes.get(i) for i in found] == [(4242, "sender", "alice"), (4242, "sender", "alice"),
                                                            (4243, "sender", "alice")]
        assert owners.lookups == 0 and owners.learned == 3
        # One flow of the socket ends, and the TCP socket closes. Their packets still on the way
        # keep their process until the refresh after the next.
        owners.learn([_flow_event(Event.FLOW_DELETED, 4242, 7, "127.0.0.1", port, "127.0.0.2", 53),
                      _flow_event(Event.SOCKET_CLOSE, 4243, 8, "0.0.0.0", 0, "0.0.0.0", 0, protocol=6)])
        assert owners.indexes([out, other, tcp], [True, True, True]).tolist() == found
        owners.refresh(now=10)
        assert owners.indexes([out, other, tcp], [True, True, True]).tolist() == found
        owners.refresh(now=20)
        again = owners.indexes([out, other, tcp], [True, True, True]).tolist()
        assert owners.processes.get(again[0]).pid == os.getpid() and again[1:] == [found[1], 0]
        # When the events stop, the rest are looked up too.
        owners.stop_learning()
        owners.refresh(now=30)
        owners.refresh(now=40)
        assert owners.processes.get(owners.indexes([other], [True])[0]).pid == os.getpid()


def test_new_flows_ask_for_the_events_waiting_before_the_socket_lookup():
    from divertgui.engine.address import Event
    waiting = [_flow_event(Event.FLOW_ESTABLISHED, 4242, 7, "10.9.9.1", 40001, "10.9.9.2", 53)]
    polls = []

    def poll_events():
        polls.append(1)
        owners.learn(waiting)
        waiting.clear()

    owners = FlowOwners(ProcessList(), poll_events=poll_events)
    raw = udp4("10.9.9.1", 40001, "10.9.9.2", 53)
    index = owners.indexes([raw], [True])[0]
    assert owners.processes.get(index).pid == 4242 and owners.lookups == 0
    owners.indexes([raw], [True])
    assert len(polls) == 1                     # a known flow asks nothing


def test_a_tally_fed_a_growing_capture_equals_counting_every_row_at_once():
    import random
    from divertgui.engine.address import Address
    from divertgui.engine.process_totals import ProcessTally, process_totals
    from divertgui.engine.processes import Process
    from divertgui.engine.store import CaptureStore, Verdict
    store = CaptureStore()
    tally = ProcessTally(store)
    rng = random.Random(3)
    indexes = [0] + [store.processes.intern(Process(20 + i % 4, f"p{i}", "u")) for i in range(6)]
    for _ in range(12):
        count = rng.randrange(0, 30)
        raws = [udp4("10.0.0.1", rng.randrange(1000, 1008), "10.0.0.2", 53, b"x" * rng.randrange(1, 50))
                for _ in range(count)]
        store.append_batch(raws, [Address(outbound=rng.random() < 0.5) for _ in range(count)],
                           [rng.choice((Verdict.PASSED, Verdict.HELD)) for _ in range(count)], 0,
                           [rng.choice(indexes) for _ in range(count)])
        if len(store):
            store.set_verdict(rng.randrange(len(store)), Verdict.DROPPED)
        counted, once = tally.totals(len(store)), process_totals(store)
        for field in once._fields:
            a, b = getattr(counted, field), getattr(once, field)
            assert (np.array_equal(a, b) if isinstance(b, np.ndarray) else a == b), field


def append_for_host(store, host: int, raws: list[bytes], process: int, verdict: int, outbound: bool = True):
    """Rows as a capture service's packets frame brings them, from store host index `host`."""
    from divertgui.engine.address import Address
    from divertgui.engine.store_columns import address_columns
    count = len(raws)
    block = np.zeros(count, [(name, np.int64) for name in ("timestamp", "if_idx", "sub_if_idx", "flags")])
    address_columns([Address(outbound=outbound)] * count, block)
    zeros = np.zeros(count, np.int64)
    return store.append_received(zeros, zeros, zeros, zeros, block["flags"], np.full(count, verdict),
                                 np.array([len(r) for r in raws]), b"".join(raws), process, host)


def test_a_pid_on_two_hosts_is_two_processes_each_with_its_own_name_and_holds():
    from divertgui.engine.process_totals import process_totals
    from divertgui.engine.processes import Process
    from divertgui.engine.store import CaptureStore, Verdict
    store = CaptureStore()
    first, second = store.hosts.add("alpha"), store.hosts.add("beta")
    curl = store.processes.intern(Process(500, "curl", "root"))
    nginx = store.processes.intern(Process(500, "nginx", "www"))
    append_for_host(store, first, [udp4("10.0.0.1", 1000, "10.0.0.2", 53)] * 2, curl, Verdict.PASSED)
    append_for_host(store, second, [udp4("10.0.0.2", 80, "10.0.0.1", 1000)] * 3, nginx, Verdict.HELD)
    totals = process_totals(store)
    assert list(zip(totals.hosts, totals.pids, totals.names)) == [(first, 500, "curl"), (second, 500, "nginx")]
    assert list(totals.packets) == [2, 3] and list(totals.held) == [0, 3] and list(totals.flows) == [1, 1]


def _with_options(raw: bytes) -> bytes:
    """The IPv4 packet with 4 bytes of options (end of list) after its 20-byte header."""
    header = bytearray(raw[:20])
    header[0] = 0x46
    header[2:4] = (len(raw) + 4).to_bytes(2, "big")
    return bytes(header) + bytes(4) + raw[20:]


def _fragment(raw: bytes) -> bytes:
    """The IPv4 packet with More Fragments set."""
    return raw[:6] + b"\x20\x00" + raw[8:]


def test_a_batch_finds_known_plain_flows_at_once_and_leaves_every_other_shape_to_the_packet_lookup():
    from divertgui.engine.address import Event
    from divertgui.engine.plain_flow_table import NOT_FOUND, PlainFlowTable, key_words
    owners = FlowOwners(ProcessList())
    # Both ends local, as on loopback: the direction decides whose packet it is.
    owners.learn([_flow_event(Event.FLOW_ESTABLISHED, 4242, 7, "10.9.9.1", 40001, "10.9.9.2", 53),
                  _flow_event(Event.FLOW_ESTABLISHED, 4243, 8, "10.9.9.2", 53, "10.9.9.1", 40001)])
    query = udp4("10.9.9.1", 40001, "10.9.9.2", 53)
    batch = [query, query, _with_options(query), _fragment(query), query[:22], bytearray(query),
             tcp4("10.9.9.1", 40001, "10.9.9.2", 53)]
    outbound = [True, False, True, True, True, True, True]
    pids = [4242, 4243, 4242, None, None, 4242, None]
    for _ in range(2):  # the first time through the packets' own lookup, then from the known flows
        found = owners.indexes(batch, outbound).tolist()
        assert [owners.processes.get(i).pid if i else None for i in found] == pids
    table = PlainFlowTable()
    words = key_words(batch, outbound)
    table.add(*words[0].tolist(), 5)
    assert table.find(words).tolist() == [5, NOT_FOUND, NOT_FOUND, NOT_FOUND, NOT_FOUND, 5, NOT_FOUND]
    owners.close()


def test_the_known_flow_table_finds_every_flow_added_a_few_at_a_time_and_no_other():
    import random
    from divertgui.engine.plain_flow_table import NOT_FOUND, PlainFlowTable, key_words
    rng = random.Random(7)
    table = PlainFlowTable()
    flows = [udp4(f"10.{rng.randrange(256)}.{rng.randrange(256)}.1", rng.randrange(1, 65536), "10.0.0.2",
                  rng.randrange(1, 65536)) for _ in range(300)]
    added = {}
    for start in range(0, 300, 37):
        batch = flows[start:start + 37]
        words = key_words(batch, [True] * len(batch))
        for i, row in enumerate(words.tolist()):
            table.add(*row, start + i + 1)
            added[start + i] = start + i + 1
        everything = key_words(flows, [True] * 300)
        assert table.find(everything).tolist() == [added.get(i, NOT_FOUND) for i in range(300)]
        assert (table.find(key_words(flows, [False] * 300)) == NOT_FOUND).all()
    table.add(*key_words(flows[:1], [True])[0].tolist(), 99)
    assert table.find(key_words(flows[:2], [True, True])).tolist() == [99, 2]
