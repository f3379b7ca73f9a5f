"""Network namespaces for tests that divert real traffic.

Nothing here touches the machine's own namespace: each test gets namespaces
of its own (unique names), joined by veth pairs when it needs two hosts, and
removed afterwards even when the test fails. Code runs inside a namespace
either in this thread (`with ns.entered():`, setns(2) on the calling thread,
which threads and subprocesses started inside inherit) or as a separate
process (`ns.popen([...])`, through `ip netns exec`).

The `backend` fixture runs a test once per Linux backend (nfqueue, pydivert's
eBPF library); `@pytest.mark.backend_differs(name, xfail=... | skip=..., when={...})`
marks where one backend's semantics differ, with the reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time

import pytest

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_names = itertools.count()
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def missing_prerequisite() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux, not {sys.platform}"
    if os.geteuid() != 0:
        return "diverting tests need root (network namespaces, nf_tables, NFQUEUE)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian packages iproute2 and nftables: the tests read rules with nft)"
    return None


def require_prerequisites() -> None:
    require(missing_prerequisite())


def require(reason: str | None) -> None:
    """A missing prerequisite (`reason`) fails the test under CI=true and skips it elsewhere."""
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"missing prerequisite in CI: {reason}")
        pytest.skip(reason)


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def run(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=30, **kwargs)


class Namespace:
    def __init__(self, name: str):
        self.name = name
        self.path = f"/run/netns/{name}"
        self._processes: list[subprocess.Popen] = []

    def ip(self, *args: str) -> str:
        return run("ip", "-n", self.name, *args).stdout

    def exec(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run("ip", "netns", "exec", self.name, *args, check=check)

    def popen(self, args: list[str], **kwargs) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.update(kwargs.pop("env", {}))
        # `ip` by its full path: the child's PATH may be the thing under test.
        process = subprocess.Popen([shutil.which("ip"), "netns", "exec", self.name, *args], env=env, **kwargs)
        self._processes.append(process)
        return process

    def ifindex(self, device: str) -> int:
        with self.entered():
            return socket.if_nametoindex(device)

    @contextlib.contextmanager
    def entered(self):
        """Run the block in this namespace (this thread, and what it starts)."""
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            _setns(self.path)
            try:
                yield self
            finally:
                if _libc.setns(home, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "could not return to the original network namespace")
        finally:
            os.close(home)

    def remove(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        run("ip", "netns", "del", self.name, check=False)


def our_chains(ns) -> list[str]:
    """What divertgui has in the namespace's nf_tables, as `nft` lists it: its tables and
    their chains ("ip6 divertgui output"); [] when it left no trace."""
    listing = json.loads(ns.exec("nft", "-j", "list", "ruleset").stdout or '{"nftables": []}')["nftables"]
    found = []
    for item in listing:
        kind, = item.keys()
        if kind in ("table", "chain"):
            entry = item[kind]
            table = entry["name"] if kind == "table" else entry["table"]
            if table == "divertgui":
                found.append(f"{entry['family']} {table}" + (f" {entry['name']}" if kind == "chain" else ""))
    return found


NAMESPACE_NAME = re.compile(r"^dgt(?P<pid>\d+)n\d+$")


def _remove_namespaces_of_dead_runs() -> None:
    """Namespaces a test run left when it was killed before its clean-up: their run is gone and no
    process is in them."""
    for name in os.listdir("/run/netns") if os.path.isdir("/run/netns") else ():
        m = NAMESPACE_NAME.match(name)
        if m and not os.path.exists(f"/proc/{m['pid']}") and not run("ip", "netns", "pids", name,
                                                                       check=False).stdout.strip():
            run("ip", "netns", "del", name, check=False)


@pytest.fixture(scope="session")
def rule_lock_open_to_the_test_user():
    """What the installer has the system create at boot, for tests that divert as another user:
    uid 65534 (group 65534) with the capture capabilities stands for a member of the group
    divertgui. For the run alone: whoever may open the lock may hold every rule change of the
    machine, so its owner and mode are put back afterwards."""
    if os.geteuid() != 0:
        yield
        return
    from divertgui.engine.backends import netfilter_rules

    def set_lock(gid: int, mode: int) -> None:
        lock = netfilter_rules.open_rule_lock()
        try:
            os.fchown(lock, 0, gid)
            os.fchmod(lock, mode)
        finally:
            os.close(lock)

    lock = netfilter_rules.open_rule_lock()
    before = os.fstat(lock)
    os.close(lock)
    changed = before.st_gid == 0
    if changed:
        set_lock(65534, 0o640)
    yield
    if changed:
        set_lock(before.st_gid, stat.S_IMODE(before.st_mode))


@pytest.fixture
def make_namespace(rule_lock_open_to_the_test_user):
    require_prerequisites()
    created: list[Namespace] = []
    _remove_namespaces_of_dead_runs()

    def make() -> Namespace:
        name = f"dgt{os.getpid()}n{next(_names)}"
        run("ip", "netns", "add", name)
        ns = Namespace(name)
        created.append(ns)
        ns.ip("link", "set", "lo", "up")
        return ns

    yield make
    for ns in reversed(created):
        ns.remove()


@pytest.fixture
def netns(make_namespace) -> Namespace:
    """One namespace with loopback up."""
    return make_namespace()


class VethPair:
    """Two namespaces joined by a veth pair: `a` (10.77.0.1, fd77::1) and `b` (10.77.0.2, fd77::2)."""

    a_v4, b_v4 = "10.77.0.1", "10.77.0.2"
    a_v6, b_v6 = "fd77::1", "fd77::2"

    def __init__(self, a: Namespace, b: Namespace, device: str):
        self.a, self.b, self.device = a, b, device


@pytest.fixture
def veth(make_namespace) -> VethPair:
    a, b = make_namespace(), make_namespace()
    device = "veth0"
    run("ip", "link", "add", "dgtmp0", "netns", a.name, "type", "veth", "peer", "name", "dgtmp1", "netns", b.name)
    pair = VethPair(a, b, device)
    for ns, old, v4, v6 in ((a, "dgtmp0", pair.a_v4, pair.a_v6), (b, "dgtmp1", pair.b_v4, pair.b_v6)):
        ns.ip("link", "set", old, "name", device)
        ns.ip("addr", "add", f"{v4}/24", "dev", device)
        ns.ip("-6", "addr", "add", f"{v6}/64", "dev", device, "nodad")
        ns.ip("link", "set", device, "up")
    # Static neighbours, so that no ARP/ND exchange races a test or meets a handle.
    mac = {ns.name: json.loads(ns.ip("-j", "link", "show", device))[0]["address"] for ns in (a, b)}
    for ns, peer, v4, v6 in ((a, b, pair.b_v4, pair.b_v6), (b, a, pair.a_v4, pair.a_v6)):
        ns.ip("neigh", "replace", v4, "lladdr", mac[peer.name], "dev", device, "nud", "permanent")
        ns.ip("-6", "neigh", "replace", v6, "lladdr", mac[peer.name], "dev", device, "nud", "permanent")
    return pair


def worker_processes(ancestor: int) -> list[int]:
    """The capture worker processes descended from process `ancestor` (named divert-wSLOT by the
    pool), in slot order."""
    parents, names = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                name, rest = stat.read().rsplit(")", 1)
        except OSError:
            continue
        parents[int(entry)] = int(rest.split()[1])
        names[int(entry)] = name.split("(", 1)[1]

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == ancestor:
                return True
        return False

    workers = [pid for pid, name in names.items() if name.startswith("divert-w") and descends(pid)]
    return sorted(workers, key=lambda pid: int(names[pid].removeprefix("divert-w")))


def wait_until(condition, seconds: float, step: float = 0.05):
    """Poll `condition` for at most `seconds`; returns its last value (no timing is asserted)."""
    end = time.monotonic() + seconds
    value = condition()
    while not value and time.monotonic() < end:
        time.sleep(step)
        value = condition()
    return value


class Passthru:
    """Reads a handle on a thread of its own, records each packet and sends it back.

    `edit(packet)` may change a packet before it is sent; returning False
    keeps it (never sent, so dropped).
    """

    def __init__(self, handle, edit=None):
        import threading
        self.handle, self.edit = handle, edit
        self.records: list = []     # (raw bytes, Address)
        self.errors: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for packet in self.handle.recv_batch(64, 0.05):
                    self.records.append((packet.raw, packet.address))
                    if self.edit is None or self.edit(packet) is not False:
                        self.handle.send(packet)
        except Exception as exc:  # surfaced by the test through .errors
            self.errors.append(exc)


def udp_socket(host: str, port: int = 0, timeout: float = 2.0) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, port))
    sock.settimeout(timeout)
    return sock


def receive_all(sock: socket.socket, seconds: float) -> list[bytes]:
    """Everything arriving on `sock` until it has been quiet for `seconds`."""
    got = []
    sock.settimeout(seconds)
    while True:
        try:
            got.append(sock.recv(65535))
        except (socket.timeout, BlockingIOError):
            return got


def receive_expected(sock: socket.socket, count: int, seconds: float = 5.0, quiet: float = 0.1) -> list[bytes]:
    """Waits (at most `seconds`) for `count` datagrams, then `quiet` more seconds for any extra one.

    The result is compared by the caller, so a missing or an extra datagram fails the test.
    """
    got = []
    end = time.monotonic() + seconds
    while len(got) < count and (left := end - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            got.append(sock.recv(65535))
        except socket.timeout:
            break
    return got + receive_all(sock, quiet)


def transport_ports(raw: bytes) -> tuple[int, int, int]:
    """(protocol, source port, destination port) of a raw IPv4/IPv6 packet without extension headers."""
    if raw[0] >> 4 == 4:
        protocol, start = raw[9], (raw[0] & 0x0F) * 4
    else:
        protocol, start = raw[6], 40
    if protocol in (6, 17):
        return protocol, int.from_bytes(raw[start:start + 2], "big"), int.from_bytes(raw[start + 2:start + 4], "big")
    return protocol, 0, 0


def icmp_echo(host: str, count: int, timeout: float = 2.0) -> int:
    """Send `count` echo requests to `host` from a raw socket; returns how many replies came back."""
    v6 = ":" in host
    sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW,
                         socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
    sock.settimeout(timeout)
    ident = os.getpid() & 0xFFFF
    replies = 0
    with sock:
        for seq in range(count):
            header = bytes([128 if v6 else 8, 0, 0, 0]) + ident.to_bytes(2, "big") + seq.to_bytes(2, "big")
            body = header + b"divertgui echo"
            if not v6:  # the kernel computes the ICMPv6 checksum itself
                total = sum(int.from_bytes(body[i:i + 2], "big") for i in range(0, len(body), 2))
                total = (total & 0xFFFF) + (total >> 16)
                total = (total & 0xFFFF) + (total >> 16)
                body = body[:2] + (~total & 0xFFFF).to_bytes(2, "big") + body[4:]
            try:
                sock.sendto(body, (host, 0))
            except PermissionError:
                continue        # a rule dropped it on its way out
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                try:
                    data = sock.recv(2048)
                except socket.timeout:
                    break
                icmp = data if v6 else data[(data[0] & 0x0F) * 4:]
                if icmp[0] == (129 if v6 else 0) and icmp[4:6] == ident.to_bytes(2, "big"):
                    replies += 1
                    break
    return replies


def _link(left: Namespace, right: Namespace, device: str, left_addrs, right_addrs) -> None:
    """A veth pair named `device` on both sides, addressed, with static neighbours."""
    temp_left, temp_right = f"dgl{next(_names)}", f"dgr{next(_names)}"
    run("ip", "link", "add", temp_left, "netns", left.name, "type", "veth", "peer", "name", temp_right,
        "netns", right.name)
    for ns, temp in ((left, temp_left), (right, temp_right)):
        ns.ip("link", "set", temp, "name", device)
    for ns, (v4, v6) in ((left, left_addrs), (right, right_addrs)):
        ns.ip("addr", "add", v4, "dev", device)
        ns.ip("-6", "addr", "add", v6, "dev", device, "nodad")
        ns.ip("link", "set", device, "up")
    mac = {ns.name: json.loads(ns.ip("-j", "link", "show", device))[0]["address"] for ns in (left, right)}
    for ns, peer, (v4, v6) in ((left, right, right_addrs), (right, left, left_addrs)):
        ns.ip("neigh", "replace", v4.split("/")[0], "lladdr", mac[peer.name], "dev", device, "nud", "permanent")
        ns.ip("-6", "neigh", "replace", v6.split("/")[0], "lladdr", mac[peer.name], "dev", device,
              "nud", "permanent")


class Routed:
    """a (10.78.1.2, fd78:1::2) -- r -- b (10.78.2.2, fd78:2::2): r forwards between them."""

    a_v4, b_v4 = "10.78.1.2", "10.78.2.2"
    a_v6, b_v6 = "fd78:1::2", "fd78:2::2"

    def __init__(self, a: Namespace, r: Namespace, b: Namespace):
        self.a, self.r, self.b = a, r, b


@pytest.fixture
def routed(make_namespace) -> Routed:
    a, r, b = make_namespace(), make_namespace(), make_namespace()
    _link(a, r, "eth0", ("10.78.1.2/24", "fd78:1::2/64"), ("10.78.1.1/24", "fd78:1::1/64"))
    _link(b, r, "eth1", ("10.78.2.2/24", "fd78:2::2/64"), ("10.78.2.1/24", "fd78:2::1/64"))
    r.exec("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    r.exec("sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1")
    gateways = ((a, "eth0", "10.78.1.1", "fd78:1::1"), (b, "eth1", "10.78.2.1", "fd78:2::1"))
    for ns, device, gateway4, gateway6 in gateways:
        ns.ip("route", "add", "default", "via", gateway4, "dev", device)
        ns.ip("-6", "route", "add", "default", "via", gateway6, "dev", device)
    return Routed(a, r, b)


# -- the backends the shared tests run on ------------------------------------

BACKENDS = ("nfqueue", "pydivert")
_ebpf_problem: list = []


class BackendChoice:
    """One of BACKENDS; calling it makes a fresh backend for one Divert handle."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self):
        if self.name == "nfqueue":
            from divertgui.engine.backends.nfqueue import NfqueueBackend
            from divertgui.engine.backends.select import default_backend
            backend = default_backend()
            assert isinstance(backend, NfqueueBackend), backend
            return backend
        from divertgui.engine.backends.pydivert import PydivertBackend
        return PydivertBackend()

    def __repr__(self) -> str:
        return self.name


def missing_ebpf(ns: Namespace) -> str | None:
    """Why pydivert's eBPF backend cannot open a handle here; None when it can."""
    try:
        import pydivert.bpf
    except ImportError as exc:
        return f"pydivert is not installed (pip install 'pydivert>=4'): {exc}"
    if pydivert.bpf.libebpfdivert is None:
        return "pydivert's libebpfdivert.so did not load: install pydivert's manylinux wheel"
    from divertgui.engine.errors import DivertError
    from divertgui.engine.handle import Divert
    with ns.entered():
        try:
            with Divert("false", backend=BackendChoice("pydivert")()):
                pass
        except DivertError as exc:
            return f"pydivert's eBPF backend cannot open a handle on this kernel (BPF, tc clsact): {exc}"
    return None


def require_ebpf(make_namespace) -> None:
    if not _ebpf_problem:
        _ebpf_problem.append(missing_ebpf(make_namespace()))
    require(_ebpf_problem[0])


@pytest.fixture(params=BACKENDS)
def backend(request, make_namespace) -> BackendChoice:
    """Each backend in turn: `Divert(..., backend=backend())`."""
    if request.param == "pydivert":
        require_ebpf(make_namespace)
    return BackendChoice(request.param)


def pytest_configure(config):
    config.addinivalue_line("markers", "backend_differs(name, xfail=reason | skip=reason, when={param: value}): "
                                       "where backend `name` differs, and why")


def pytest_collection_modifyitems(items):
    """Turns each backend_differs mark into a strict xfail or a skip of that backend's parameter."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        for mark in item.iter_markers("backend_differs"):
            name, = mark.args
            if params.get("backend") != name:
                continue
            if any(params.get(key) != value for key, value in mark.kwargs.get("when", {}).items()):
                continue
            if "xfail" in mark.kwargs:
                item.add_marker(pytest.mark.xfail(strict=True, reason=f"{name}: {mark.kwargs['xfail']}"))
            else:
                item.add_marker(pytest.mark.skip(reason=f"{name}: {mark.kwargs['skip']}"))
