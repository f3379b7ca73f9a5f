"""The oracle as a pytest fixture: skipped with a reason when absent, failing under CI."""

from __future__ import annotations

import os

import pytest

from tests import oracle


@pytest.fixture(scope="session")
def reference():
    if not oracle.AVAILABLE:
        if os.environ.get("CI") == "true":
            pytest.fail(oracle.UNAVAILABLE_REASON)
        pytest.skip(oracle.UNAVAILABLE_REASON)
    return oracle
