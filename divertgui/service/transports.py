"""The byte streams a service speaks on: its standard input and output, or
connections to a Unix socket in a directory no other user can write to."""

from __future__ import annotations

import os
import socket
import stat


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def take_stdio() -> tuple[int, int]:
    """(read fd, write fd) of the protocol, moved off 0 and 1.

    Whatever else prints to standard output afterwards lands on standard
    error, and nothing reads standard input, so the stream stays framed.
    """
    protocol_in, protocol_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return protocol_in, protocol_out


class SocketPathError(ValueError):
    """A socket path the service refuses to listen on."""


def check_socket_directory(path: str) -> None:
    """Refuse a directory another user could use to pre-empt or replace the socket."""
    directory = os.path.dirname(os.path.abspath(path)) or "/"
    try:
        info = os.lstat(directory)
    except OSError as exc:
        raise SocketPathError(f"--listen {path}: its directory {directory} cannot be used: {exc.strerror}") from None
    if stat.S_ISLNK(info.st_mode):
        raise SocketPathError(f"--listen {path}: its directory {directory} is a symbolic link")
    if not stat.S_ISDIR(info.st_mode):
        raise SocketPathError(f"--listen {path}: {directory} is not a directory")
    if info.st_uid not in (0, os.geteuid()):
        raise SocketPathError(f"--listen {path}: its directory {directory} belongs to uid {info.st_uid}, "
                              f"who could replace the socket; use a directory of root's or your own")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise SocketPathError(f"--listen {path}: its directory {directory} is writable by other users "
                              f"(mode {stat.S_IMODE(info.st_mode):04o}), who could pre-empt the socket; "
                              f"use a directory only its owner can write, e.g. /run/divertgui")


def listen_unix(path: str) -> socket.socket:
    """A listening socket at `path`; a stale socket of ours there is replaced, anything else refused."""
    check_socket_directory(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.geteuid():
            raise SocketPathError(f"--listen {path}: something else is there already")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)
        else:
            raise SocketPathError(f"--listen {path}: another service is listening there")
        finally:
            probe.close()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    # Every user may connect; SO_PEERCRED decides who is served.
    os.chmod(path, 0o666)
    server.listen(8)
    return server
