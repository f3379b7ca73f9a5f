"""Without privileges, opening a handle fails with one sentence that says what is needed."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.netns

# Everything is imported before privileges go: the interpreter's own files
# need not be readable by `nobody`.
OPEN_UNPRIVILEGED = """
import importlib, os, sys
from divertgui.engine.errors import DivertError
from divertgui.engine.handle import Divert
from tests.integration.conftest import BackendChoice
handle = Divert("true", backend=BackendChoice(sys.argv[1])())
importlib.import_module({"nfqueue": "divertgui.engine.backends.nfqueue", "pydivert": "pydivert.ebpf"}[sys.argv[1]])
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
try:
    handle.open()
except DivertError as exc:
    print(type(exc).__name__)
    print(exc)
else:
    print("opened")
"""

# What the message must name, beyond "root", for each backend.
NEEDS = {"nfqueue": "root", "pydivert": "CAP_BPF"}


def test_not_root(netns, backend):
    process = netns.popen([sys.executable, "-c", OPEN_UNPRIVILEGED, backend.name], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    kind, _, message = out.partition("\n")
    assert kind == "NotPrivilegedError", out
    assert "root" in message and NEEDS[backend.name] in message and "\n" not in message.strip()
