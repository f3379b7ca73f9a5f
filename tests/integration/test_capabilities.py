"""Diverting as an ordinary user (uid 65534) holding only CAP_NET_ADMIN and CAP_NET_RAW.

The process starts as root inside the test's namespace, imports what it needs,
then becomes uid 65534 keeping exactly the capabilities under test. That is
done in the process rather than by setpriv because the interpreter may live
where uid 65534 cannot read it (a pyenv under /root, say). Two states:

- "file": permitted and effective only, as the file capabilities that
  packaging/install-linux.sh sets give them; nothing inheritable or ambient;
- "ambient": also inheritable and ambient, as `setpriv --inh-caps
  +net_admin,+net_raw --ambient-caps +net_admin,+net_raw` starts a program.
"""

import json
import subprocess
import sys

import pytest

from divertgui.engine import privileges
from tests.integration.conftest import our_chains

pytestmark = pytest.mark.netns

PORT = 40091
COUNT = 5

BECOME_NOBODY = """
import ctypes, gzip, importlib, json, os, pkgutil, socket, sys, time
import divertgui.engine, divertgui.service, psutil
# Every module a capture may import lazily (psutil too), loaded while the checkout is readable: it may be
# where uid 65534 cannot read it (a fresh clone in a private temporary directory).
for package in (divertgui.engine, divertgui.service):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
from divertgui.engine import privileges
from divertgui.engine.backends import netfilter_rules
from divertgui.engine.errors import DivertError
from divertgui.engine.handle import Divert
from divertgui.engine.packet import Packet

libc = ctypes.CDLL(None, use_errno=True)
PR_SET_KEEPCAPS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE = 8, 47, 2
KEPT = {"none": 0, "file": 1 << 12 | 1 << 13, "ambient": 1 << 12 | 1 << 13}[sys.argv[1]]


class Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def checked(result, what):
    if result != 0:
        raise OSError(ctypes.get_errno(), what)


checked(libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "PR_SET_KEEPCAPS")
os.setgroups([])
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)
data = (Data * 2)()
data[0].effective = data[0].permitted = KEPT
data[0].inheritable = KEPT if sys.argv[1] == "ambient" else 0
checked(libc.capset(ctypes.byref(Header(0x20080522, 0)), data), "capset")
if sys.argv[1] == "ambient":
    for cap in (12, 13):
        checked(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0), "PR_CAP_AMBIENT_RAISE")
"""

DIVERT_AS_NOBODY = BECOME_NOBODY + """
report = {"uid": os.getuid(), "caps": privileges.current().__dict__}
server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.bind(("127.0.0.1", PORT))
server.settimeout(2)
client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
with Divert(f"udp.DstPort == {PORT}") as handle:
    report["chains_open"] = sorted(c.name for c in netfilter_rules.list_handles())
    diverted = []
    for i in range(COUNT):
        client.sendto(b"datagram %d" % i, ("127.0.0.1", PORT))
        packet = handle.recv(timeout=2)
        diverted.append(packet.payload.decode())
        if i == 0:
            # A new packet (no pending verdict) goes out through a raw socket: CAP_NET_RAW.
            copy = Packet(bytearray(packet.raw), packet.address)
            copy.payload = b"injected"
            copy.recalculate_checksums()
            handle.send(copy)
        handle.send(packet)
    report["diverted"] = diverted
    report["injected"] = handle.stats()["injected"]
received = []
try:
    while len(received) < COUNT + 1:
        received.append(server.recv(2048).decode())
except socket.timeout:
    pass
report["received"] = received
report["chains_closed"] = sorted(c.name for c in netfilter_rules.list_handles())
report["caps_after"] = privileges.current().__dict__
print(json.dumps(report))
""".replace("PORT", str(PORT)).replace("COUNT", str(COUNT))

OPEN_WITHOUT_CAPABILITIES = BECOME_NOBODY + """
try:
    Divert("udp").open()
except DivertError as exc:
    print(json.dumps({"kind": type(exc).__name__, "message": str(exc), "uid": os.getuid()}))
else:
    print(json.dumps({"kind": "opened"}))
"""


def _run_as_nobody(netns, script: str, kept: str) -> dict:
    process = netns.popen([sys.executable, "-c", script, kept], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("kept", ["file", "ambient"])
def test_an_ordinary_user_with_the_two_capabilities_diverts_and_releases_traffic(netns, kept):
    report = _run_as_nobody(netns, DIVERT_AS_NOBODY, kept)
    assert report["uid"] == 65534
    assert report["caps"]["effective"] == report["caps"]["permitted"] == 1 << 12 | 1 << 13
    # The engine raises nothing: in the file-capability state nothing is ambient at the end either.
    assert report["caps_after"]["ambient"] == report["caps"]["ambient"] == (0 if kept == "file" else 1 << 12 | 1 << 13)
    assert report["chains_open"] and all(name.startswith("DG") for name in report["chains_open"])
    assert report["diverted"] == [f"datagram {i}" for i in range(COUNT)]
    assert report["injected"] == 1
    assert sorted(report["received"]) == sorted(["injected"] + [f"datagram {i}" for i in range(COUNT)])
    assert report["chains_closed"] == []
    assert our_chains(netns) == []


def test_without_the_capabilities_the_error_is_the_one_sentence(netns):
    report = _run_as_nobody(netns, OPEN_WITHOUT_CAPABILITIES, "none")
    assert report["uid"] == 65534
    assert report["kind"] == "NotPrivilegedError"
    assert report["message"] == privileges.privilege_sentence(["CAP_NET_ADMIN", "CAP_NET_RAW"])
    assert our_chains(netns) == []
