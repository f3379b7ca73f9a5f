"""Entries of the handle registry as a reader finds them: what a member of the
capture group puts there (a FIFO, a link, something that is not an entry)
is passed over, never waited on."""

from __future__ import annotations

import json
import os
import threading

from divertgui.engine.backends import handle_registry


def _entry(pid: int) -> dict:
    return {"pid": pid, "start": 1, "layer": 0, "priority": 0, "flags": 0, "filter": "true", "opened": 1}


def _read_in_thread(directory: int, name: str) -> list:
    """read_entry on its own thread, so that a reader stuck on a FIFO fails the test instead of hanging it."""
    found = []
    reader = threading.Thread(target=lambda: found.append(handle_registry.read_entry(directory, name)),
                              daemon=True)
    reader.start()
    reader.join(10)
    return found


def test_a_fifo_or_a_link_named_as_an_entry_is_passed_over(tmp_path):
    os.mkfifo(tmp_path / "1-fifo.json")
    (tmp_path / "2-real.json").write_text(json.dumps(_entry(os.getpid())))
    (tmp_path / "3-link.json").symlink_to(tmp_path / "2-real.json")
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert _read_in_thread(directory, "1-fifo.json") == [None]
        assert _read_in_thread(directory, "3-link.json") == [None]
        [real] = _read_in_thread(directory, "2-real.json")
    finally:
        os.close(directory)
    assert real.pid == os.getpid() and real.filter == "true"
