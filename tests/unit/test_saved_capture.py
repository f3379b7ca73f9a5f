"""A capture saved to pcapng and read back: verdicts, original bytes and each packet's process."""

from __future__ import annotations

import pytest

from divertgui.engine.address import Address
from divertgui.engine.pcapng import CaptureReader
from divertgui.engine.processes import Process
from divertgui.engine.saved_capture import load_into, packet_comment, read_comment, save_rows
from divertgui.engine.store import CaptureStore, Verdict
from tests.unit.test_pcapng import tshark_fields
from tests.unit.test_processes import udp4

ODD = Process(4242, "my (odd); process: name", "DOMAIN\\Jo Smith")


@pytest.mark.parametrize("verdict, original, process", [
    (Verdict.PASSED, None, None),
    (Verdict.HELD, None, Process(10, "curl", "root")),
    (Verdict.MODIFIED, b"\x45\x00", Process(11, "nc", "alice")),
    (Verdict.DROPPED, None, ODD),
])
def test_a_comment_reads_back_as_written(verdict, original, process):
    assert read_comment(packet_comment(verdict, original, process)) == (verdict, original, process)


@pytest.mark.parametrize("comment", ["passed; process: curl", "passed; process: curl (x), user root",
                                     "passed; process: curl (0), user root", "passed; process: "])
def test_a_process_not_written_by_us_is_no_process(comment):
    assert read_comment(comment) == (Verdict.PASSED, None, None)


def test_each_packet_keeps_its_process_through_a_file_that_tshark_reads(tmp_path):
    store = CaptureStore()
    curl = store.processes.intern(Process(10, "curl", "root"))
    odd = store.processes.intern(ODD)
    raws = [udp4("10.0.0.1", 1000 + i, "10.0.0.2", 53) for i in range(3)]
    store.append_batch(raws, [Address(outbound=True)] * 3, Verdict.PASSED, 1_700_000_000 * 10**9, [curl, 0, odd])
    path = tmp_path / "processes.pcapng"
    assert save_rows(store, path, range(3)) == 3
    again = CaptureStore()
    loaded = load_into(again, CaptureReader(path))
    assert loaded.count == 3 and loaded.error is None
    assert [again.process(row) for row in range(3)] == [Process(10, "curl", "root"), None, ODD]
    assert [again.verdict(row) for row in range(3)] == [Verdict.PASSED] * 3
    comments = [fields[0] for fields in tshark_fields(path, "frame.comment")]
    assert comments == ["passed; process: curl (10), user root", "passed",
                        "passed; process: my (odd); process: name (4242), user DOMAIN\\Jo Smith"]
