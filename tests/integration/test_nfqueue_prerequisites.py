"""Without iptables, opening an nfqueue handle says which tool is missing and how to get it."""

import os
import subprocess
import sys

import pytest

from divertgui.engine.backends.netfilter_rules import TOOL_DIRECTORIES

pytestmark = pytest.mark.netns

OPEN_AND_REPORT = """
from divertgui.engine.errors import DivertError
from divertgui.engine.handle import Divert
try:
    Divert("true").open()
except DivertError as exc:
    print(type(exc).__name__)
    print(exc)
else:
    print("opened")
"""


def test_no_iptables(netns):
    # iptables is run by its full path, never found through PATH: hide the
    # directories it is looked up in, in a mount namespace of this process alone.
    hide = " && ".join(f"mount -t tmpfs empty {d}" for d in TOOL_DIRECTORIES if not os.path.islink(d))
    process = netns.popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", f'{hide} && exec "$@"',
                           "sh", sys.executable, "-c", OPEN_AND_REPORT], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    kind, _, message = out.partition("\n")
    assert kind == "MissingToolError"
    assert "iptables" in message and "install" in message and "\n" not in message.strip()
