"""A deadlocked test ends the run with every thread's stack instead of holding it."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

STUCK = '''
import threading

import tests.hang_guard

tests.hang_guard.HANG_LIMIT_S = 1


def test_deadlocked():
    lock = threading.Lock()
    lock.acquire()
    lock.acquire()
'''


def test_a_deadlocked_test_ends_the_run_with_its_stack(tmp_path):
    (tmp_path / "test_stuck.py").write_text(STUCK)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.hang_guard", "-p", "no:cacheprovider",
         "-c", "/dev/null", "--rootdir", str(tmp_path), "-o", "timeout=0", str(tmp_path / "test_stuck.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "Timeout" in done.stderr
    assert "test_stuck.py\", line 12 in test_deadlocked" in done.stderr
