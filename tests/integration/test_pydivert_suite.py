"""pydivert's own test suite, unchanged, run against divertgui.pydivert inside a network namespace.

The suite ships in the pydivert wheel (pydivert/tests/). Its four files run
in a pytest of their own, as root in a fresh namespace (loopback only), with
`pydivert` replaced by divertgui.pydivert (tests/pydivert_suite/plugin.py).
docs/porting.md lists, per file, how many pass, fail and are skipped, and
every test that does not pass with the reason; this test holds the run to
that list, so the documentation stays true.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import pytest

from tests.integration.conftest import REPO, require

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


def test_pydivert_suite_runs_as_documented(netns, tmp_path):
    source = installed_suite()
    require(None if source else "pydivert's test suite is not installed (pip install -e '.[test]')")
    for name in SUITE_FILES:
        shutil.copyfile(os.path.join(source, name), tmp_path / name)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\ntimeout = 60\n")
    report = tmp_path / "report.xml"
    process = netns.popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.pydivert_suite.plugin",
         f"--junitxml={report}", *SUITE_FILES],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output, _ = process.communicate(timeout=540)
    assert report.exists(), output

    results = outcomes(str(report))
    counts, not_passing = documented()
    actual_not_passing = {test: outcome for test, outcome in results.items() if outcome != "passed"}
    assert actual_not_passing == not_passing, output
    actual_counts = {name: tuple(sum(1 for test, outcome in results.items()
                                     if test.startswith(name + "::") and outcome == kind)
                                 for kind in ("passed", "fails", "skipped"))
                     for name in SUITE_FILES}
    assert actual_counts == counts, output
