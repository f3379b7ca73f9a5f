"""pydivert's own test suite, unchanged, run against divertgui.pydivert inside a network namespace.

The suite ships in the pydivert wheel (pydivert/tests/). Its four files run
in a pytest of their own, as root in a fresh network namespace (loopback
only) and a cgroup of the test's own, with `pydivert` replaced by
divertgui.pydivert (tests/pydivert_suite/plugin.py).
docs/porting.md lists, per file, how many pass, fail and are skipped, and
every test that does not pass with the reason; this test holds the run to
that list, so the documentation stays true.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
import xml.etree.ElementTree as ElementTree

import pytest

from tests.integration.conftest import REPO, require
from tests.integration.socket_layer_fixtures import own_cgroup, start_in  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.netns, pytest.mark.timeout(600)]

SUITE_FILES = ("test_packet.py", "test_integration.py", "test_real_world.py", "test_async.py")
PORTING = os.path.join(REPO, "docs", "porting.md")
COUNT_ROW = re.compile(r"^\| `(test_\w+\.py)` \| (\d+) \| (\d+) \| (\d+) \|$")
NOT_PASSING_ROW = re.compile(r"^\| `(test_\w+\.py)::(\S+)` \| (fails|skipped) \| .+ \|$")


def installed_suite() -> str | None:
    spec = importlib.util.find_spec("pydivert")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(spec.submodule_search_locations[0], "tests")
    return folder if all(os.path.isfile(os.path.join(folder, name)) for name in SUITE_FILES) else None


def documented() -> tuple[dict[str, tuple[int, int, int]], dict[str, str]]:
    """From docs/porting.md: {file: (passed, failed, skipped)} and {file::test: "fails" | "skipped"}."""
    counts, not_passing = {}, {}
    with open(PORTING, encoding="utf-8") as doc:
        for line in doc:
            line = line.rstrip("\n")
            if match := COUNT_ROW.match(line):
                counts[match[1]] = (int(match[2]), int(match[3]), int(match[4]))
            elif match := NOT_PASSING_ROW.match(line):
                not_passing[f"{match[1]}::{match[2]}"] = match[3]
    return counts, not_passing


def outcomes(junit_xml: str) -> dict[str, str]:
    """{file::test: "passed" | "fails" | "skipped"} from pytest's JUnit report."""
    results = {}
    for case in ElementTree.parse(junit_xml).getroot().iter("testcase"):
        module = case.get("classname").rsplit(".", 1)[-1]
        kinds = {child.tag for child in case}
        outcome = ("fails" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed")
        results[f"{module}.py::{case.get('name')}"] = outcome
    return results


def test_pydivert_suite_runs_as_documented(netns, own_cgroup, tmp_path):
    source = installed_suite()
    require(None if source else "pydivert's test suite is not installed (pip install -e '.[test]')")
    for name in SUITE_FILES:
        shutil.copyfile(os.path.join(source, name), tmp_path / name)
    ini = tmp_path / "pytest.ini"
    ini.write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\ntimeout = 60\n")
    report = tmp_path / "report.xml"
    pytest_run = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.pydivert_suite.plugin",
                  "-c", str(ini), "--rootdir", str(tmp_path), f"--junitxml={report}",
                  *(str(tmp_path / name) for name in SUITE_FILES)]
    # The SOCKET layer's programs attach to the root of the cgroup hierarchy
    # they see: a cgroup namespace rooted at the test's own cgroup keeps
    # them to the suite's own sockets.
    process = start_in(netns, own_cgroup, shutil.which("unshare"), "--cgroup", "--mount", "/bin/sh", "-c",
                       'mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec "$@"', "sh", *pytest_run)
    output, errors = process.communicate(timeout=540)
    assert report.exists(), output + errors

    results = outcomes(str(report))
    counts, not_passing = documented()
    actual_not_passing = {test: outcome for test, outcome in results.items() if outcome != "passed"}
    newly_passing = sorted(set(not_passing) - set(actual_not_passing))
    assert not newly_passing, (f"{newly_passing} pass now: take them out of docs/porting.md's list and "
                               f"update its counts")
    assert actual_not_passing == not_passing, output + errors
    actual_counts = {name: tuple(sum(1 for test, outcome in results.items()
                                     if test.startswith(name + "::") and outcome == kind)
                                 for kind in ("passed", "fails", "skipped"))
                     for name in SUITE_FILES}
    assert actual_counts == counts, output + errors
