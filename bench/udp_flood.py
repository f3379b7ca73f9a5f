"""A 64-byte UDP flood between two network namespaces joined by a veth pair,
fast enough that the diverter, not the flood, sets the pace.

The sender hands the kernel `--batch` datagrams per sendmmsg(2) call, from
one socket per source address in turn (netfilter's queue balancing hashes
the addresses, so several flows are needed to spread over workers). The
receiver reads up to RECEIVE_SLOTS datagrams per recvmmsg(2) call and only
counts them. Both calls go through ctypes: per packet, Python costs a few
nanoseconds, and the kernel's own work is what is left.

The sender keeps at most `--window` packets unacknowledged (the receiver
acks every ACK_EVERY packets over a port no diverting filter here matches),
so a diverter that keeps up loses nothing and pps is the rate of the
slowest stage; the window stays below every queue's length. pps is counted
between the end of a warm-up and the end of the run from the receiver's
acks; lost = sent - received after the run has drained. flood_cpu_us is
the CPU time sender and receiver used per packet sent, the kernel's work on
the way (veth, netfilter, queueing) included.

    with Pair() as pair:
        result = flood(pair, seconds=3.0)    # {"pps", "sent", "received", "lost", "flood_cpu_us", ...}

Run as a script, it is one side of the flood (`send` or `receive`) inside a
namespace; flood() starts both.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import select
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from divertgui.engine.backends.netlink import IoVec, MMsgHdr  # noqa: E402  (the ctypes layouts of mmsghdr)

FLOOD_PORT, CONTROL_PORT, OTHER_PORT = 47001, 47002, 47003
SENDER_ADDR, RECEIVER_ADDR = "10.99.0.1", "10.99.0.2"
FLOWS = 16
SENDER_ADDRS = [SENDER_ADDR] + [f"10.99.0.{11 + i}" for i in range(FLOWS - 1)]
PAYLOAD = 64 - 20 - 8           # a 64-byte IPv4 packet
ACK_EVERY = 128
RECEIVE_SLOTS = 256
WARM_UP = 0.5                   # seconds of flood before counting starts
STALL = 0.2                     # seconds without an ack after which the window is assumed lost
DRAIN = 2.0                     # seconds after the run for the last packets to arrive
ACK = struct.Struct("!Q")       # the receiver's count so far, on the control port
FINAL_ANSWER = struct.Struct("!Qd")     # its count and CPU seconds, asked for after the run
SO_RCVBUFFORCE = 33

_libc = ctypes.CDLL(None, use_errno=True)


def _messages(count: int, buffers, size: int):
    """count mmsghdrs, message i over buffers[i] (size bytes); buffers may repeat one buffer."""
    iovecs = (IoVec * count)(*[IoVec(ctypes.addressof(b), size) for b in buffers])
    headers = (MMsgHdr * count)()
    for i in range(count):
        headers[i].header.iov = ctypes.pointer(iovecs[i])
        headers[i].header.iovlen = 1
    return headers, iovecs


def _check(result: int, call: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
            return 0
        raise OSError(code, f"{call}: {os.strerror(code)}")
    return result


# -- the two sides, each run inside its namespace ------------------------------------

def run_sender(seconds: float, window: int, batch: int) -> None:
    sendmmsg = _libc.sendmmsg
    sendmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
    floods = []
    for address in SENDER_ADDRS:
        flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        flood.bind((address, 0))
        flood.connect((RECEIVER_ADDR, FLOOD_PORT))
        floods.append(flood)
    fds = [flood.fileno() for flood in floods]
    payload = ctypes.create_string_buffer(b"x" * PAYLOAD, PAYLOAD)
    headers, _iovecs = _messages(batch, [payload] * batch, PAYLOAD)
    headers_at = ctypes.addressof(headers)
    control = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    control.bind((SENDER_ADDR, CONTROL_PORT))
    control.setblocking(False)
    print("ready", flush=True)

    sent = acked = stalls = turn = 0
    cpu_at_start = cpu_seconds()
    started = time.monotonic()
    counting_from = started + WARM_UP
    deadline = counting_from + seconds
    counted_at = counted_acked = None
    now = started
    while now < deadline:
        room = window - (sent - acked)
        if room >= min(batch, window):
            sent += _check(sendmmsg(fds[turn], headers_at, min(batch, room), 0), "sendmmsg")
            turn = (turn + 1) % len(fds)
        elif select.select([control], [], [], STALL)[0] == []:
            stalls += 1
            acked = sent        # what was lost is never acked: carry on, counted at the end
        try:
            while True:
                acked = max(acked, ACK.unpack(control.recv(64)[:8])[0])
        except BlockingIOError:
            pass
        now = time.monotonic()
        if counted_at is None and now >= counting_from:
            counted_at, counted_acked = now, acked
    elapsed = now - counted_at
    counted = acked - counted_acked
    cpu = cpu_seconds() - cpu_at_start
    received, receiver_cpu = _final_count(control, sent)
    print(json.dumps({"sent": sent, "received": received, "counted": counted, "seconds": elapsed,
                      "stalls": stalls, "pps": counted / elapsed if elapsed > 0 else 0.0,
                      "sender_cpu": cpu, "receiver_cpu": receiver_cpu}), flush=True)


def cpu_seconds() -> float:
    """User + system time of this process so far; the kernel's work for its packets (the
    veth, netfilter and queueing, in softirq on its way out) is counted as its system time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _final_count(control: socket.socket, sent: int) -> tuple[int | None, float | None]:
    """Asks the receiver for its count (and CPU time) until the count stops growing or has
    everything sent."""
    end = time.monotonic() + DRAIN
    received = cpu = None
    while time.monotonic() < end:
        control.sendto(b"COUNT", (RECEIVER_ADDR, CONTROL_PORT))
        if select.select([control], [], [], 0.1)[0]:
            try:
                while True:
                    message = control.recv(64)
                    if len(message) == FINAL_ANSWER.size:
                        count, cpu = FINAL_ANSWER.unpack(message)
                        if count == sent or count == received:
                            return count, cpu
                        received = count
            except BlockingIOError:
                pass
        time.sleep(0.1)
    return received, cpu


def run_receiver() -> None:
    recvmmsg = _libc.recvmmsg
    recvmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p)
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        flood.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
    except OSError:
        flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    flood.bind((RECEIVER_ADDR, FLOOD_PORT))
    # A bounded wait, so that the control port is looked at while the flood pauses.
    flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 100_000))
    control = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    control.bind((RECEIVER_ADDR, CONTROL_PORT))
    control.setblocking(False)
    slot = 64   # longer datagrams are cut: only their number matters
    buffers = [ctypes.create_string_buffer(slot) for _ in range(RECEIVE_SLOTS)]
    headers, _iovecs = _messages(RECEIVE_SLOTS, buffers, slot)
    headers_at, fd = ctypes.addressof(headers), flood.fileno()
    sender = (SENDER_ADDR, CONTROL_PORT)
    wait_for_one = 0x10000  # MSG_WAITFORONE: block for the first datagram only
    print("ready", flush=True)
    cpu_at_start = cpu_seconds()
    received = acked = 0
    while True:
        got = recvmmsg(fd, headers_at, RECEIVE_SLOTS, wait_for_one, None)
        if got > 0:
            received += got
            if received - acked >= ACK_EVERY:
                control.sendto(ACK.pack(received), sender)
                acked = received
            continue
        _check(got, "recvmmsg")
        if received != acked:
            control.sendto(ACK.pack(received), sender)
            acked = received
        try:
            request, peer = control.recvfrom(64)
        except BlockingIOError:
            continue
        if request == b"COUNT":
            control.sendto(FINAL_ANSWER.pack(received, cpu_seconds() - cpu_at_start), peer)


def load_average() -> str:
    """The machine's load, to be printed beside figures taken on it."""
    with open("/proc/loadavg") as f:
        return "load average " + ", ".join(f.read().split()[:3])


# -- namespaces ----------------------------------------------------------------------

def sh(*args: str, check: bool = True) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


class Pair:
    """Two namespaces, sender and receiver, joined by a veth pair; removed on exit."""

    def __init__(self):
        tag = os.getpid()
        self.sender, self.receiver = f"dgbench{tag}s", f"dgbench{tag}r"

    def __enter__(self):
        try:
            for ns in (self.sender, self.receiver):
                sh("ip", "netns", "add", ns)
                sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "link", "add", "dgb0", "netns", self.sender, "type", "veth", "peer", "name", "dgb1",
               "netns", self.receiver)
            for ns, dev, addr in ((self.sender, "dgb0", SENDER_ADDR), (self.receiver, "dgb1", RECEIVER_ADDR)):
                sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
                sh("ip", "-n", ns, "link", "set", dev, "up")
            for address in SENDER_ADDRS[1:]:
                sh("ip", "-n", self.sender, "addr", "add", f"{address}/24", "dev", "dgb0")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        for ns in (self.sender, self.receiver):
            sh("ip", "netns", "del", ns, check=False)

    def popen(self, ns: str, args: list[str], **kwargs) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        return subprocess.Popen(["ip", "netns", "exec", ns, *args], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def wait_line(process: subprocess.Popen, stream, marker: str, seconds: float = 30) -> str:
    seen = ""
    end = time.monotonic() + seconds
    while marker not in seen and time.monotonic() < end and process.poll() is None:
        if select.select([stream], [], [], 0.2)[0]:
            seen += stream.readline()
    if marker not in seen:
        rest = process.stderr.read() if process.poll() is not None else ""
        raise RuntimeError(f"process did not get ready: {seen}{rest}")
    return seen


def flood(pair: Pair, seconds: float = 3.0, window: int = 2048, batch: int = 64) -> dict:
    """One flood from the sender's namespace to the receiver's; the sender's figures."""
    me = str(Path(__file__).resolve())
    receiver = pair.popen(pair.receiver, [sys.executable, me, "receive"])
    try:
        wait_line(receiver, receiver.stdout, "ready")
        sender = pair.popen(pair.sender, [sys.executable, me, "send", str(seconds), str(window), str(batch)])
        out, err = sender.communicate(timeout=seconds + WARM_UP + DRAIN + 30)
        if sender.returncode != 0:
            raise RuntimeError(f"the sender failed: {err.strip()}")
    finally:
        receiver.kill()
        receiver.communicate()
    result = json.loads(out.strip().splitlines()[-1])
    result["lost"] = result["sent"] - (result["received"] or 0)
    if result["sent"]:
        result["flood_cpu_us"] = (result["sender_cpu"] + (result["receiver_cpu"] or 0)) * 1e6 / result["sent"]
    return result


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "send":
        run_sender(float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif role == "receive":
        run_receiver()
    else:
        sys.exit(f"usage: {sys.argv[0]} send SECONDS WINDOW BATCH | receive")
