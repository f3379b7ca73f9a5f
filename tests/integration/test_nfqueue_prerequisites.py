"""Without iptables, opening an nfqueue handle says which tool is missing and how to get it."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.netns

OPEN_AND_REPORT = """
from divertgui.engine.handle import Divert, DivertError
try:
    Divert("true").open()
except DivertError as exc:
    print(type(exc).__name__)
    print(exc)
else:
    print("opened")
"""


def test_no_iptables(netns):
    process = netns.popen([sys.executable, "-c", OPEN_AND_REPORT], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env={"PATH": "/nonexistent"})
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    kind, _, message = out.partition("\n")
    assert kind == "MissingToolError"
    assert "iptables" in message and "install" in message and "\n" not in message.strip()
