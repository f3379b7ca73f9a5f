import pytest

from tests.unit.session_harness import Running


@pytest.fixture
def running():
    r = Running()
    yield r
    if r.thread.is_alive():
        r.stop()
