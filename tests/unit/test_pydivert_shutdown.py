"""On Windows, Divert.shutdown() reaches WinDivertShutdown through pydivert.

Only the call can be checked on Linux: pydivert's DLL binding is replaced by
a recorder, and the backend told it runs on Windows.
"""

import pytest

from divertgui.engine.backends import pydivert as backend_module
from divertgui.engine.backends.pydivert import PydivertBackend

pydivert = pytest.importorskip("pydivert")


class _Handle:
    _handle = 0x1234
    is_open = True


@pytest.mark.parametrize("how, code", [("recv", 1), ("send", 2), ("both", 3)])
def test_shutdown_calls_windivert_shutdown_on_windows(monkeypatch, how, code):
    from pydivert import windivert_dll
    calls = []
    backend = PydivertBackend()
    monkeypatch.setattr(backend_module, "IS_WINDOWS", True)
    monkeypatch.setattr(windivert_dll, "WinDivertShutdown", lambda handle, how: calls.append((handle, how)),
                        raising=False)
    backend.divert = _Handle()
    backend.shutdown(how)
    # WINDIVERT_SHUTDOWN_RECV = 1, WINDIVERT_SHUTDOWN_SEND = 2, WINDIVERT_SHUTDOWN_BOTH = 3.
    assert calls == [(0x1234, code)]
