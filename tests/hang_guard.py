"""A test stuck where no Python signal handler runs, such as two threads deadlocked
inside Qt, is past pytest-timeout's reach and would hold the whole run until CI's
limit. Past HANG_LIMIT_S, the stacks of every thread go to the terminal and the run
ends with a failure."""

import faulthandler
import os
import sys

import pytest

# Beyond pytest-timeout's 300 s (pyproject.toml), which fails a test Python can still interrupt.
HANG_LIMIT_S = 420

_terminal = None


def pytest_configure(config):
    global _terminal
    # A descriptor of its own: during a test, pytest's capture has taken the standard ones.
    _terminal = os.dup(sys.stderr.fileno())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    faulthandler.dump_traceback_later(HANG_LIMIT_S, exit=True, file=_terminal)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
