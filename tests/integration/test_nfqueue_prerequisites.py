"""A missing prerequisite is reported in one clear sentence naming what is missing."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.netns

# Everything is imported before privileges go: the interpreter's own files
# need not be readable by `nobody`.
OPEN_AND_REPORT = """
import os, sys
from divertgui.engine.handle import Divert, DivertError
import divertgui.engine.backends.nfqueue
handle = Divert("true")
if sys.argv[1] == "unprivileged":
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


def _report(ns, how: str, env=None) -> tuple[str, str]:
    process = ns.popen([sys.executable, "-c", OPEN_AND_REPORT, how], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, env=env or {})
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    kind, _, message = out.partition("\n")
    return kind, message.strip()


def test_not_root(netns):
    kind, message = _report(netns, "unprivileged")
    assert kind == "NotPrivilegedError"
    assert "root" in message and "\n" not in message


def test_no_iptables(netns):
    kind, message = _report(netns, "root", env={"PATH": "/nonexistent"})
    assert kind == "MissingToolError"
    assert "iptables" in message and "install" in message and "\n" not in message
