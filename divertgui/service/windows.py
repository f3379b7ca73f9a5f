"""Windows: the window runs unelevated and starts the capture service elevated
(a UAC prompt) when a capture needs it.

An elevated process cannot inherit the pipes of an unelevated one, so the
window creates a named pipe with a random name, a single instance and no
remote clients, that only this user and SYSTEM may open
(windows_pipe_security), starts `divert serve --pipe NAME` through
ShellExecuteExW with the "runas" verb, and waits for the service to
connect. The service speaks the same framed protocol on that pipe as on
standard input/output.

Written against the Win32 documentation and unit-tested on Linux where it
can be (command lines, the ShellExecuteExW structure, the pipe's SDDL,
error texts); it has not yet run on Windows.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import subprocess
import sys

from divertgui.service.windows_pipe_security import owner_only_attributes

PIPE_PREFIX = "\\\\.\\pipe\\divertgui-"
SEE_MASK_NOCLOSEPROCESS = 0x00000040
SEE_MASK_NOASYNC = 0x00000100
SW_HIDE = 0
ERROR_CANCELLED = 1223
ERROR_FILE_NOT_FOUND = 2
PIPE_REJECT_REMOTE_CLIENTS = 0x00000008
PIPE_ACCESS_DUPLEX = 0x00000003
FILE_FLAG_FIRST_PIPE_INSTANCE = 0x00080000
PIPE_TYPE_BYTE = PIPE_READMODE_BYTE = PIPE_WAIT = 0
PIPE_BUFFER_SIZE = 1 << 20
INVALID_HANDLE_VALUE = ctypes.c_void_p(-1).value
CONNECT_TIMEOUT_MS = 120_000      # the user may take a while to answer the UAC prompt


class ElevationError(OSError):
    """The elevated service could not be started; the message says why in one sentence."""


def pipe_name() -> str:
    return PIPE_PREFIX + secrets.token_hex(16)


def service_parameters(pipe: str) -> str:
    """The command line after the program: `serve --pipe NAME`, quoted as Windows parses it."""
    if not pipe.startswith(PIPE_PREFIX) or not pipe[len(PIPE_PREFIX):].isalnum():
        raise ValueError(f"not a divertgui pipe name: {pipe!r}")
    return subprocess.list2cmdline(["serve", "--pipe", pipe])


def service_program() -> str:
    """The bundled divert.exe beside the window's executable."""
    return os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "divert.exe")


def elevation_error(code: int, program: str) -> str:
    if code == ERROR_CANCELLED:
        return "capturing needs Administrator rights, and the UAC prompt was declined"
    if code == ERROR_FILE_NOT_FOUND:
        return f"the capture program {program} is missing: reinstall divertgui"
    return f"the capture program {program} could not be started elevated (Windows error {code})"


class ShellExecuteInfo(ctypes.Structure):
    """SHELLEXECUTEINFOW."""

    _fields_ = [
        ("cbSize", ctypes.c_uint32), ("fMask", ctypes.c_uint32), ("hwnd", ctypes.c_void_p),
        ("lpVerb", ctypes.c_wchar_p), ("lpFile", ctypes.c_wchar_p), ("lpParameters", ctypes.c_wchar_p),
        ("lpDirectory", ctypes.c_wchar_p), ("nShow", ctypes.c_int), ("hInstApp", ctypes.c_void_p),
        ("lpIDList", ctypes.c_void_p), ("lpClass", ctypes.c_wchar_p), ("hkeyClass", ctypes.c_void_p),
        ("dwHotKey", ctypes.c_uint32), ("hIconOrMonitor", ctypes.c_void_p), ("hProcess", ctypes.c_void_p),
    ]


def runas_request(program: str, parameters: str) -> ShellExecuteInfo:
    info = ShellExecuteInfo()
    info.cbSize = ctypes.sizeof(ShellExecuteInfo)
    info.fMask = SEE_MASK_NOCLOSEPROCESS | SEE_MASK_NOASYNC
    info.lpVerb = "runas"
    info.lpFile = program
    info.lpParameters = parameters
    info.nShow = SW_HIDE
    return info


def start_elevated(program: str, parameters: str) -> int:
    """ShellExecuteExW "runas": the UAC prompt, then the elevated process; its process handle."""
    info = runas_request(program, parameters)
    shell32 = ctypes.WinDLL("shell32", use_last_error=True)
    if not shell32.ShellExecuteExW(ctypes.byref(info)):
        raise ElevationError(elevation_error(ctypes.get_last_error(), program))
    return info.hProcess


def create_owner_only_pipe(name: str) -> int:
    """CreateNamedPipeW: one instance, no remote clients, this user and SYSTEM only; its handle."""
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.CreateNamedPipeW.restype = ctypes.c_void_p
    kernel32.CreateNamedPipeW.argtypes = [ctypes.c_wchar_p] + [ctypes.c_uint32] * 6 + [ctypes.c_void_p]
    with owner_only_attributes() as attributes:
        handle = kernel32.CreateNamedPipeW(
            name, PIPE_ACCESS_DUPLEX | FILE_FLAG_FIRST_PIPE_INSTANCE,
            PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
            1, PIPE_BUFFER_SIZE, PIPE_BUFFER_SIZE, CONNECT_TIMEOUT_MS, ctypes.addressof(attributes))
    if handle is None or handle == INVALID_HANDLE_VALUE:
        raise ElevationError(f"cannot create the pipe {name} to the capture service "
                             f"(Windows error {ctypes.get_last_error()})")
    return handle


class ElevatedPipe:
    """The window's end of a named pipe to an elevated service: `read(n)` and `write(data)`."""

    def __init__(self):
        import _winapi
        self._winapi = _winapi
        self.name = pipe_name()
        self.handle = create_owner_only_pipe(self.name)
        self.process = None

    def start_service(self, program: str | None = None) -> None:
        program = program or service_program()
        self.process = start_elevated(program, service_parameters(self.name))
        self._winapi.ConnectNamedPipe(self.handle, False)

    def read(self, size: int) -> bytes:
        try:
            data, _ = self._winapi.ReadFile(self.handle, size)
        except BrokenPipeError:
            return b""
        return data

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written, _ = self._winapi.WriteFile(self.handle, bytes(view))
            view = view[written:]

    def close(self) -> None:
        self._winapi.CloseHandle(self.handle)


def open_service_pipe(name: str):
    """The service's end of the pipe the window created: (file, read, write)."""
    if not name.startswith(PIPE_PREFIX):
        raise ValueError(f"--pipe {name}: not a divertgui pipe (\\\\.\\pipe\\divertgui-...)")
    pipe = open(name, "r+b", buffering=0)

    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[pipe.write(view):]

    return pipe, pipe.read, write
