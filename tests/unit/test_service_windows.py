"""The Windows elevation path, as far as it can be checked off Windows: the
ShellExecuteExW request, the service's command line, the pipe names, the
pipe's security descriptor and the sentences for a declined prompt."""

import ctypes
import subprocess

import pytest

from divertgui.service import windows
from divertgui.service import windows_pipe_security as security


def test_the_request_matches_shellexecuteinfow():
    if ctypes.sizeof(ctypes.c_void_p) == 8:
        assert ctypes.sizeof(windows.ShellExecuteInfo) == 112      # sizeof(SHELLEXECUTEINFOW), x64
    request = windows.runas_request(r"C:\Program Files\divertgui\divert.exe", "serve --pipe x")
    assert request.cbSize == ctypes.sizeof(windows.ShellExecuteInfo)
    assert request.lpVerb == "runas" and request.nShow == windows.SW_HIDE
    assert request.fMask & windows.SEE_MASK_NOCLOSEPROCESS


def test_the_service_is_started_on_a_fresh_random_pipe():
    first, second = windows.pipe_name(), windows.pipe_name()
    assert first != second and first.startswith(windows.PIPE_PREFIX)
    assert windows.service_parameters(first) == subprocess.list2cmdline(["serve", "--pipe", first])


@pytest.mark.parametrize("name", [r"\\.\pipe\other", windows.PIPE_PREFIX + "x y", windows.PIPE_PREFIX + "a\"b"])
def test_only_our_own_pipe_names_reach_a_command_line(name):
    with pytest.raises(ValueError):
        windows.service_parameters(name)


def test_a_declined_prompt_says_so_in_one_sentence():
    assert windows.elevation_error(windows.ERROR_CANCELLED, "divert.exe") == (
        "capturing needs Administrator rights, and the UAC prompt was declined")
    assert "reinstall" in windows.elevation_error(windows.ERROR_FILE_NOT_FOUND, r"C:\x\divert.exe")


def test_the_service_refuses_a_pipe_that_is_not_ours():
    with pytest.raises(ValueError, match="not a divertgui pipe"):
        windows.open_service_pipe("/tmp/elsewhere")


USER_SID = "S-1-5-21-3623811015-3361044348-30300820-1013"


def _aces(sddl: str) -> list[tuple[str, ...]]:
    dacl, _, aces = sddl.partition("(")
    assert dacl == "D:P", "a protected DACL, nothing inherited into it"
    return [tuple(ace.split(";")) for ace in ("(" + aces).strip("()").split(")(")]


def test_the_pipe_admits_its_user_and_system_only():
    sddl = security.pipe_sddl(USER_SID)
    assert sddl == f"D:P(A;;GA;;;SY)(A;;GA;;;{USER_SID})"
    aces = _aces(sddl)
    assert {ace[5] for ace in aces} == {"SY", USER_SID}
    assert all(ace[0] == "A" and ace[2] == "GA" for ace in aces)
    assert "WD" not in sddl and "BU" not in sddl and "AU" not in sddl     # Everyone, Users, Authenticated Users


@pytest.mark.parametrize("sid", ["", "S-1-5-21-1-2)(A;;GA;;;WD", "WD", "S-1-5-x", "S-1", "s-1-5-18 "])
def test_only_a_sid_names_the_user(sid):
    with pytest.raises(ValueError, match="not a security identifier"):
        security.pipe_sddl(sid)


def test_the_structures_are_the_win32_layouts():
    pointer = ctypes.sizeof(ctypes.c_void_p)
    assert ctypes.sizeof(security.SecurityAttributes) == (24 if pointer == 8 else 12)
    assert security.SecurityAttributes.lpSecurityDescriptor.offset == pointer
    assert ctypes.sizeof(security.SidAndAttributes) == 2 * pointer
    attributes = security.security_attributes(0x5A5A0)
    assert attributes.nLength == ctypes.sizeof(security.SecurityAttributes)
    assert attributes.lpSecurityDescriptor == 0x5A5A0 and attributes.bInheritHandle == 0


def test_the_pipe_mode_is_one_byte_stream_for_local_clients():
    assert windows.PIPE_ACCESS_DUPLEX == 3 and windows.FILE_FLAG_FIRST_PIPE_INSTANCE == 0x80000
    assert windows.PIPE_REJECT_REMOTE_CLIENTS == 8
