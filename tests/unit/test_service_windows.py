"""The Windows elevation path, as far as it can be checked off Windows: the
ShellExecuteExW request, the service's command line, the pipe names and the
sentences for a declined prompt."""

import ctypes
import subprocess

import pytest

from divertgui.service import windows


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
