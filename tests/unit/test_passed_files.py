"""Files a client attaches to its commands over a Unix socket: taken in the order sent, judged on
what arrived (a regular file open for reading), a few waiting at most."""

import os
import socket

import pytest

from divertgui.service.commands import CommandError
from divertgui.service.passed_files import MAX_WAITING, PassedFiles, send_with_file


@pytest.fixture
def pair():
    client, service = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    passed = PassedFiles(service)
    yield client, passed
    passed.close()
    client.close()
    service.close()


def attach(client, passed, fd: int, frame: bytes = b"frame") -> None:
    send_with_file(client, frame, fd)
    os.close(fd)
    assert passed.read(len(frame)) == frame


def test_files_are_taken_in_the_order_sent_and_read_from_their_start(pair, tmp_path):
    client, passed = pair
    for name in ("first", "second"):
        (tmp_path / name).write_bytes(name.encode())
        fd = os.open(tmp_path / name, os.O_RDONLY)
        os.read(fd, 2)
        attach(client, passed, fd)
    assert passed.take("open.path", "first").read() == b"first"
    assert passed.take("open.path", "second").read() == b"second"
    with pytest.raises(CommandError, match="open.path: the command says a file comes with it, and none came"):
        passed.take("open.path", "third")


def test_what_is_not_a_regular_file_open_for_reading_is_refused(pair, tmp_path):
    client, passed = pair
    read_end, write_end = os.pipe()
    attach(client, passed, read_end)
    with pytest.raises(CommandError, match="the file sent for /x is not a regular file"):
        passed.take("start.path", "/x")
    os.close(write_end)
    (tmp_path / "capture").write_bytes(b"")
    attach(client, passed, os.open(tmp_path / "capture", os.O_WRONLY))
    with pytest.raises(CommandError, match="the file sent for /y is not open for reading"):
        passed.take("start.path", "/y")


def test_files_no_command_claims_wait_a_few_at_most(pair, tmp_path):
    client, passed = pair
    (tmp_path / "capture").write_bytes(b"x")
    for _ in range(MAX_WAITING + 2):
        attach(client, passed, os.open(tmp_path / "capture", os.O_RDONLY))
    assert passed.refused == 2
    for _ in range(MAX_WAITING):
        passed.take("open.path", "capture").close()
    with pytest.raises(CommandError):
        passed.take("open.path", "capture")
