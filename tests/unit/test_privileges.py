"""Reading the capability sets, the sentence about what is missing, handing capabilities to children."""

import os
import shutil
import subprocess
import sys

import pytest

from divertgui.engine import privileges
from divertgui.engine.privileges import CAP_NET_ADMIN, CAP_NET_RAW, CapabilitySets

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BOTH = 1 << CAP_NET_ADMIN | 1 << CAP_NET_RAW

# /proc/<pid>/status of a process given cap_net_admin,cap_net_raw+ep by setcap, run by an ordinary user.
FILE_CAPABILITY_STATUS = """Name:\tdivertgui
Umask:\t0022
State:\tS (sleeping)
Uid:\t1000\t1000\t1000\t1000
CapInh:\t0000000000000000
CapPrm:\t0000000000003000
CapEff:\t0000000000003000
CapBnd:\t000001ffffffffff
CapAmb:\t0000000000000000
NoNewPrivs:\t0
"""


def linux_only():
    if not sys.platform.startswith("linux"):
        pytest.skip("capability sets are Linux's")


def require(reason: str | None) -> None:
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"missing prerequisite in CI: {reason}")
        pytest.skip(reason)


def test_the_status_file_gives_every_set():
    sets = privileges.parse_status(FILE_CAPABILITY_STATUS)
    assert sets == CapabilitySets(inheritable=0, permitted=BOTH, effective=BOTH, bounding=(1 << 41) - 1, ambient=0)
    assert sets.has(CAP_NET_ADMIN) and sets.has(CAP_NET_RAW) and not sets.has(0)


def test_only_the_effective_set_decides():
    permitted_only = CapabilitySets(permitted=BOTH)
    assert not privileges.may_divert(permitted_only) and not privileges.may_inject(permitted_only)
    admin_only = CapabilitySets(effective=1 << CAP_NET_ADMIN)
    assert privileges.may_divert(admin_only) and not privileges.may_inject(admin_only)
    assert privileges.missing_capabilities(admin_only) == ["CAP_NET_RAW"]
    assert privileges.missing_privilege(CapabilitySets(effective=BOTH)) is None


@pytest.mark.parametrize("text, complaint", [
    ("Name:\tx\nCapPrm:\t0\n", "has no CapEff line"),
    ("Name:\tx\nCapEff:\tzz00\n", "line 2: CapEff is not a hexadecimal mask: 'zz00'"),
])
def test_a_broken_status_file_says_what_and_where(text, complaint):
    with pytest.raises(ValueError, match=complaint.replace("(", r"\(")) as caught:
        privileges.parse_status(text, "/proc/1/status")
    assert str(caught.value).startswith("/proc/1/status")


@pytest.mark.skipif(sys.platform == "win32", reason="Windows says Administrator rights instead")
@pytest.mark.parametrize("effective, names", [(0, "CAP_NET_ADMIN and CAP_NET_RAW"),
                                              (1 << CAP_NET_RAW, "CAP_NET_ADMIN"),
                                              (1 << CAP_NET_ADMIN, "CAP_NET_RAW")])
def test_the_sentence_names_what_is_missing_and_both_ways_to_get_it(effective, names):
    sentence = privileges.missing_privilege(CapabilitySets(effective=effective))
    assert sentence.startswith(f"diverting packets needs {names}, which this process does not have: ")
    assert "run it as root (sudo)" in sentence and "packaging/install-linux.sh" in sentence
    assert ("these capabilities" in sentence) == (" and " in names)
    # One sentence: it is shown in a banner and embedded in the session's fallback reason.
    assert "\n" not in sentence and ". " not in sentence and not sentence.endswith(".")


def test_this_thread_is_read_from_proc():
    linux_only()
    with open("/proc/thread-self/status") as f:
        expected = privileges.parse_status(f.read())
    assert privileges.current() == expected
    assert privileges.may_divert() == expected.has(CAP_NET_ADMIN)


def test_a_process_without_the_capabilities_says_so():
    linux_only()
    require(None if os.geteuid() == 0 and shutil.which("setpriv")
            else "needs root and setpriv (util-linux) to start a process without CAP_NET_ADMIN")
    script = ("from divertgui.engine import privileges\n"
              "print(privileges.may_divert())\nprint(privileges.missing_privilege())")
    done = subprocess.run(["setpriv", "--inh-caps=-all", "--bounding-set=-net_admin", sys.executable, "-c", script],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=REPO))
    assert done.returncode == 0, done.stderr
    may, sentence = done.stdout.splitlines()
    assert may == "False"
    assert sentence == privileges.privilege_sentence(["CAP_NET_ADMIN"])
