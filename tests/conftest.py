import os

from hypothesis import HealthCheck, settings

# The `reference` fixture (WinDivert's own compiler, the test oracle).
pytest_plugins = ["tests.reference"]

# Generated-input tests run a bounded number of examples so the suite stays
# fast; `HYPOTHESIS_PROFILE=thorough` runs many more.
settings.register_profile("default", max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# `capture_cgroup` for live captures, and the session's check that none attached at the root cgroup.
pytest_plugins.append("tests.cgroup_fixtures")

# A test stuck beyond pytest-timeout's reach ends the run with every thread's stack.
pytest_plugins.append("tests.hang_guard")
