"""`divert`: WinDivert's sample programs as subcommands.

    divert netdump FILTER [-w FILE.pcapng] [-c N] [-v]   sniff and print packets
    divert netfilter FILTER                              block: TCP RST, UDP ICMP unreachable, drop the rest
    divert passthru FILTER [--batch N] [--threads N]     divert and re-inject everything
    divert webfilter [BLOCKLIST...] [--block HOST/PATH]  block HTTP requests: block page or RST
    divert streamdump PORT                               print TCP streams to PORT through a local proxy
    divert conditions FILTER [--lag MS] [--drop PCT] ... network conditions (Clumsy's modules) until stopped
    divert check FILTER                                  print the canonical form of a filter
    divert list | cleanup [--all]                        open handles; our rules in this network namespace
    divert watch [FILTER] [-c N]                         handles opening and closing (the REFLECT layer)
    divert kill PID... | --all                           stop the processes holding handles, removing their rules
    divert socketdump [FILTER] [--block] [--cgroup PATH] socket operations with their process (the SOCKET layer)
    divert flowtrack [FILTER] [--cgroup PATH]            TCP and UDP flows opening and closing, with their process
    divert serve [--listen PATH --allow-uid UID ...]     a capture service for divertgui windows
    divert doctor                                        what works on this machine, what is missing

Long-running commands stop on SIGINT and SIGTERM, closing their handle
(which removes its rules). Exit status: 0 done, 1 runtime failure (missing
privilege, kernel feature, tool), 2 bad usage or bad filter.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import signal
import stat
import sys
import threading
import time

from divertgui.engine.address import Flag, Layer
from divertgui.engine.collector_settings import set_for_packet_flow
from divertgui.engine.read_pacing import DEFAULT_MOST_WAIT, GATHER_TARGET, ReadPacing, most_wait_from_microseconds
from divertgui.samples import UsageError, streamdump, webfilter

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_LOST = 0, 1, 2, 3
LAYERS = {"network": Layer.NETWORK, "forward": Layer.NETWORK_FORWARD}
POLL_SECONDS = 0.2


class _Stop:
    """Set by SIGINT/SIGTERM; the loops poll it between bounded waits."""

    def __init__(self):
        self.event = threading.Event()
        self.signal_name: str | None = None

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.signal_name = signal.Signals(signum).name
        self.event.set()
        if sys.platform.startswith("linux"):
            from divertgui.engine.backends.netfilter_rules import interrupt_lock_waits
            interrupt_lock_waits()

    def __bool__(self) -> bool:
        return self.event.is_set()


# -- errors ------------------------------------------------------------------------

def _say(message: str, stream=None) -> None:
    print(message, file=stream or sys.stdout, flush=True)


def _error(message: str) -> None:
    _say(f"divert: {message}", sys.stderr)


def filter_error_text(text: str, exc) -> str:
    """The error, the filter around the position it names with a caret under it, and a suggestion."""
    from divertgui.engine.filter.errors import report
    return report(text, exc, "divert: bad filter: ")


def _compile(text: str, layer: Layer):
    from divertgui.engine.filter import compile_filter
    return compile_filter(text, layer)


def _open_handle(args, flags: Flag, queue_length: int | None = None, diverted: str | None = None):
    """A handle on args.filter; `diverted` (args.filter narrowed) is what it actually diverts."""
    from divertgui.engine.address import Param
    from divertgui.engine.handle import Divert
    _compile(args.filter, LAYERS[args.layer])  # a bad filter is a usage error, whatever the privilege
    _require_privilege()
    handle = Divert(diverted or args.filter, layer=LAYERS[args.layer], priority=args.priority, flags=flags,
                    backend=_backend())
    queue_length = getattr(args, "queue_length", None) or queue_length
    if queue_length:
        handle.set_param(Param.QUEUE_LENGTH, queue_length)
    handle.open()
    return handle


LOSS_WARNING_SECONDS = 1.0


class _LossWarnings:
    """While a handle or a pool of workers runs: a line on stderr, at most one a second, whenever it
    lost packets. `stats()` gives the counters (a handle's, or the workers' summed)."""

    def __init__(self, stats):
        from divertgui.engine.loss import LossWatch
        self.stats = stats
        self.watch = LossWatch()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="loss warnings", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join(timeout=5)

    def _run(self) -> None:
        while not self.done.wait(LOSS_WARNING_SECONDS):
            news = self.watch.news(self.stats())
            if news is not None:
                loss, new = news
                _say(f"divert: warning: {new} packets lost in the last second; {loss.lost} of {loss.offered} "
                     f"({loss.percent_text()}) so far: {loss.parts_text()}", sys.stderr)


def _report_loss(args, stats: dict) -> int | None:
    """The loss line at the end; EXIT_LOST when packets were lost and --strict was given."""
    from divertgui.engine.loss import loss_of
    loss = loss_of(stats)
    _say(f"divert: lost {loss.lost} of {loss.offered} packets ({loss.percent_text()})"
         + (f": {loss.parts_text()}" if loss.lost else ""), sys.stderr)
    return EXIT_LOST if loss.lost and args.strict else None


def _backend():
    """The Linux backend with the kernel prefilter, when this is Linux."""
    if not sys.platform.startswith("linux"):
        return None
    from divertgui.engine.backends.nfqueue import NfqueueBackend
    from divertgui.engine.filter.kernel import kernel_test
    return NfqueueBackend(kernel_prefilter=kernel_test)


def _run_guarded(command, args) -> int:
    """Runs a command; turns the engine's errors into one sentence and an exit status."""
    from divertgui.engine.filter import FilterError
    from divertgui.engine.errors import DivertArgumentError, DivertError
    try:
        return command(args)
    except FilterError as exc:
        _say(filter_error_text(args.filter, exc), sys.stderr)
        return EXIT_USAGE
    except DivertArgumentError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except _CaptureFileError as exc:
        _error(str(exc))
        return EXIT_FAILURE
    except (DivertError, PermissionError, RuntimeError) as exc:
        text = _first_sentence(exc)
        if "Permission denied" in text or "must be root" in text:
            from divertgui.engine import privileges
            text = privileges.privilege_sentence()
        _error(text)
        return EXIT_FAILURE
    except BrokenPipeError:
        # The reader of our output went away (`divert netdump ... | head`).
        sys.stdout = open(os.devnull, "w")
        return EXIT_OK
    except OSError as exc:
        _error(str(exc))
        return EXIT_FAILURE


def _first_sentence(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


def _require_privilege() -> None:
    from divertgui.engine import privileges
    if sys.platform.startswith("linux") and not privileges.may_divert():
        raise PermissionError(privileges.privilege_sentence())


# -- decoding for display --------------------------------------------------------

TCP_FLAG_LETTERS = (("U", 0x20), ("A", 0x10), ("P", 0x08), ("R", 0x04), ("S", 0x02), ("F", 0x01))


def _flag_text(flags: int) -> str:
    return "".join(letter for letter, bit in TCP_FLAG_LETTERS if flags & bit) or "."


def summary_line(packet, number: int) -> str:
    """One line: direction, interface, flags, then the decoded headers."""
    address = packet.address
    parts = [f"{number:>5}", "outbound" if address.outbound else "inbound ", f"if={address.if_idx}"]
    if address.loopback:
        parts.append("loopback")
    if address.impostor:
        parts.append("impostor")
    ip4, ip6 = packet.ipv4, packet.ipv6
    if ip4 is not None:
        parts.append(f"IPv4 {ip4.src_addr} > {ip4.dst_addr} ttl={ip4.ttl} id={ip4.id} len={ip4.length}"
                     + (" frag" if ip4.mf or ip4.frag_offset else ""))
    elif ip6 is not None:
        parts.append(f"IPv6 {ip6.src_addr} > {ip6.dst_addr} hlim={ip6.hop_limit} len={ip6.length}")
    else:
        parts.append(f"not IPv4/IPv6 ({len(packet.raw)} bytes)")
        return " ".join(parts)
    tcp, udp, icmp, icmp6 = packet.tcp, packet.udp, packet.icmpv4, packet.icmpv6
    if tcp is not None:
        payload = packet.payload or b""
        parts.append(f"TCP {tcp.src_port} > {tcp.dst_port} [{_flag_text(tcp.flags)}] seq={tcp.seq_num} "
                     f"ack={tcp.ack_num} win={tcp.window} payload={len(payload)}")
    elif udp is not None:
        parts.append(f"UDP {udp.src_port} > {udp.dst_port} payload={len(packet.payload or b'')}")
    elif icmp is not None:
        parts.append(f"ICMP type={icmp.type} code={icmp.code}")
    elif icmp6 is not None:
        parts.append(f"ICMPv6 type={icmp6.type} code={icmp6.code}")
    else:
        protocol = ip4.protocol if ip4 is not None else ip6.next_hdr
        parts.append(f"protocol={protocol}")
    return " ".join(parts)


def _fields_text(name: str, values: list[tuple[str, object]]) -> str:
    return f"{name} [" + " ".join(f"{k}={v}" for k, v in values) + "]"


def _bit(value) -> int:
    return 1 if value else 0


def _hex(value: int, digits: int) -> str:
    return f"0x{value:0{digits}X}"


BYTES_PER_HEX_LINE, CHARS_PER_TEXT_LINE = 20, 40


def detail_block(packet, start_ns: int) -> str:
    """WinDivert netdump's block, line for line: a blank line, the address, each
    header's fields, a blank line, the bytes in hex and then as text.

    Flags print as 0/1 and hex fields in upper case, as the C sample prints them,
    so that scripts written against netdump's output read ours. The timestamp is
    in seconds since `start_ns` (time.monotonic_ns(), the clock of Address.timestamp).
    """
    from divertgui.engine.header_fields import FILTER_READS, read_value
    from divertgui.engine.packet_hash import hash_packet
    address = packet.address
    raw = bytes(packet.raw)
    # netdump writes ", " after the timestamp and spaces elsewhere; kept for its parsers.
    lines = ["", f"Packet [Timestamp={(address.timestamp - start_ns) / 1e9:.8g}, " + " ".join(
        f"{k}={v}" for k, v in (
            ("Direction", "outbound" if address.outbound else "inbound"), ("IfIdx", address.if_idx),
            ("SubIfIdx", address.sub_if_idx), ("Loopback", _bit(address.loopback)),
            ("Impostor", _bit(address.impostor)), ("Hash", _hex(hash_packet(raw), 16)))) + "]"]
    ip4, ip6 = packet.ipv4, packet.ipv6
    if ip4 is not None:
        lines.append(_fields_text("IPv4", [
            ("Version", ip4.version), ("HdrLength", ip4.hdr_len), ("TOS", ip4.tos), ("Length", ip4.length),
            ("Id", _hex(ip4.id, 4)), ("Reserved", _bit(ip4.reserved_flag)), ("DF", _bit(ip4.df)),
            ("MF", _bit(ip4.mf)), ("FragOff", ip4.frag_offset), ("TTL", ip4.ttl), ("Protocol", ip4.protocol),
            ("Checksum", _hex(ip4.checksum, 4)), ("SrcAddr", ip4.src_addr), ("DstAddr", ip4.dst_addr)]))
    if ip6 is not None:
        lines.append(_fields_text("IPv6", [
            # netdump prints WinDivert's FlowLabel (the filter's value), not the 20-bit label.
            ("Version", ip6.version), ("TrafficClass", ip6.traffic_class),
            ("FlowLabel", read_value(raw, 0, FILTER_READS["ipv6.FlowLabel"])), ("Length", ip6.length), ("NextHdr", ip6.next_hdr), ("HopLimit", ip6.hop_limit),
            ("SrcAddr", ip6.src_addr), ("DstAddr", ip6.dst_addr)]))
    icmp, icmp6, tcp, udp = packet.icmpv4, packet.icmpv6, packet.tcp, packet.udp
    for name, header in (("ICMP", icmp), ("ICMPV6", icmp6)):
        if header is not None:
            lines.append(_fields_text(name, [("Type", header.type), ("Code", header.code),
                                             ("Checksum", _hex(header.checksum, 4)), ("Body", _hex(header.body, 8))]))
    if tcp is not None:
        # WinDivert's TCP header splits the bits beside the flags into Reserved1
        # (the low nibble of byte 12: three reserved bits and NS) and Reserved2 (CWR, ECE).
        lines.append(_fields_text("TCP", [
            ("SrcPort", tcp.src_port), ("DstPort", tcp.dst_port), ("SeqNum", tcp.seq_num), ("AckNum", tcp.ack_num),
            ("HdrLength", tcp.hdr_len), ("Reserved1", (tcp.reserved << 1) | _bit(tcp.ns)),
            ("Reserved2", (_bit(tcp.cwr) << 1) | _bit(tcp.ece)), ("Urg", _bit(tcp.urg)), ("Ack", _bit(tcp.ack)),
            ("Psh", _bit(tcp.psh)), ("Rst", _bit(tcp.rst)), ("Syn", _bit(tcp.syn)), ("Fin", _bit(tcp.fin)),
            ("Window", tcp.window), ("Checksum", _hex(tcp.checksum, 4)), ("UrgPtr", tcp.urg_ptr)]))
    if udp is not None:
        lines.append(_fields_text("UDP", [("SrcPort", udp.src_port), ("DstPort", udp.dst_port),
                                          ("Length", udp.length), ("Checksum", _hex(udp.checksum, 4))]))
    lines.append("")
    for offset in range(0, len(raw), BYTES_PER_HEX_LINE):
        lines.append("\t" + raw[offset:offset + BYTES_PER_HEX_LINE].hex().upper())
    text = "".join(chr(b) if 32 <= b < 127 else "." for b in raw)
    for offset in range(0, len(text), CHARS_PER_TEXT_LINE):
        lines.append("\t" + text[offset:offset + CHARS_PER_TEXT_LINE])
    return "\n".join(lines)


# -- netdump ---------------------------------------------------------------------------

def cmd_netdump(args) -> int:
    if args.workers > 1:
        return _netdump_workers(args)
    stop = _Stop()
    stop.install()
    _compile(args.filter, LAYERS[args.layer])
    _require_privilege()
    writer = _capture_file(args.write) if args.write else None
    count, write_error = 0, None
    try:
        handle = _open_handle(args, Flag.SNIFF | Flag.RECV_ONLY)
        with handle:
            if not args.quiet:
                _say(f"divert: sniffing {args.filter!r} (priority {args.priority}); Ctrl+C to stop", sys.stderr)
            started_ns = time.monotonic_ns()
            with _LossWarnings(handle.stats):
                while not stop and write_error is None and (args.count is None or count < args.count):
                    wanted = 255 if args.count is None else min(255, args.count - count)
                    batch = handle.recv_batch(wanted, POLL_SECONDS)
                    for packet in batch:
                        count += 1
                        if not args.quiet:
                            _say(detail_block(packet, started_ns) if args.verbose else summary_line(packet, count))
                    if writer is not None and batch:
                        try:
                            writer.write_batch([(p.raw, p.address, None) for p in batch])
                        except OSError as exc:
                            write_error = exc
            stats = handle.stats()
    except BaseException:
        _close_quietly(writer)
        raise
    return _netdump_end(args, writer, write_error, count, stats)


def _close_quietly(writer) -> None:
    if writer is not None:
        with contextlib.suppress(OSError):
            writer.close()


def _netdump_end(args, writer, write_error: OSError | None, count: int, stats: dict) -> int:
    """Closes the capture file and says what was captured and lost; the exit status."""
    if writer is not None:
        try:
            writer.close()
        except OSError as exc:
            write_error = write_error or exc
    written = "" if writer is None else (f", written to {args.write}" if write_error is None
                                         else f"; {args.write} holds those written before the error below")
    _say(f"divert: {count} packets captured{written}", sys.stderr)
    lost = _report_loss(args, stats)
    if write_error is not None:
        _error(_write_error_text(args.write, write_error))
        return EXIT_FAILURE
    return lost or EXIT_OK


def _netdump_workers(args) -> int:
    """netdump over several worker processes. NFLOG groups cannot share one rule's packets the
    way NFQUEUE's queue balancing does, so the workers take them through NFQUEUE and let each
    batch go on unchanged at once (fail-open: while a worker is missing its packets pass
    uncopied, and are counted as bypassed); they hand copies to this process, which numbers,
    prints and writes them in the order they come, each once."""
    import queue
    from divertgui.engine import fork_server
    from divertgui.engine.packet import Packet
    _compile(args.filter, LAYERS[args.layer])
    _require_privilege()
    copies = fork_server.context().Queue()
    writer = _capture_file(args.write) if args.write else None
    stop = _Stop()
    stop.install()
    count, write_error, closed = 0, None, False
    pool_done = threading.Event()
    started_ns = time.monotonic_ns()

    def show() -> None:
        """Until the pool has ended and its copies are all taken: what -c leaves over, or what
        comes after the output went away, is taken and let go, so that no worker waits on it."""
        nonlocal count, write_error, closed
        while True:
            try:
                batch = copies.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if pool_done.is_set():
                    return
                continue
            if args.count is not None:
                batch = batch[:args.count - count]
            if closed or not batch:
                continue
            packets = [Packet(raw, address) for raw, address in batch]
            try:
                for packet in packets:
                    count += 1
                    if not args.quiet:
                        _say(detail_block(packet, started_ns) if args.verbose else summary_line(packet, count))
            except BrokenPipeError:
                # The reader of our output went away (`divert netdump ... | head`).
                closed = True
                sys.stdout = open(os.devnull, "w")
                stop.event.set()
            if writer is not None and write_error is None:
                try:
                    writer.write_batch([(p.raw, p.address, None) for p in packets])
                except OSError as exc:
                    write_error = exc
                    stop.event.set()
            if args.count is not None and count >= args.count:
                stop.event.set()

    shower = threading.Thread(target=show, daemon=True)
    shower.start()
    try:
        totals = _run_workers(args, _netdump_work, copies, f"sniffing {args.filter!r}", flags=Flag.FAIL_OPEN,
                              stop=stop, quiet=args.quiet)
    except BaseException:
        _close_quietly(writer)
        raise
    finally:
        pool_done.set()
        shower.join()
    return _netdump_end(args, writer, write_error, count, totals)


def _netdump_work(handle, stop, copies) -> dict:
    """A netdump worker: each batch's copies go to the pool's process, the packets on at once."""
    copied = 0
    while True:
        stopping = stop.is_set()
        batch = handle.recv_batch(255, 0 if stopping else POLL_SECONDS)
        if not batch:
            if stopping:
                return {"copied": copied}
            continue
        copies.put([(bytes(packet.raw), packet.address.copy(sniffed=True)) for packet in batch])
        handle.send_batch(batch)
        copied += len(batch)


def _capture_file(path: str):
    """The pcapng writer of `-w`, its header already on disk: a file that cannot be
    written is refused before anything is diverted."""
    from divertgui.engine.interface_names import in_this_namespace
    from divertgui.engine.pcapng import PcapngWriter
    writer = None
    try:
        # Written where the packets are captured: this namespace's names are theirs.
        writer = PcapngWriter(path, application="divert netdump",
                              interface_name=lambda if_idx, loopback: in_this_namespace(if_idx))
        writer.flush()
    except OSError as exc:
        if writer is not None:
            with contextlib.suppress(OSError):
                writer.close()
        raise _CaptureFileError(_write_error_text(path, exc)) from exc
    return writer


class _CaptureFileError(Exception):
    """The -w file cannot be written; the message names it."""


def _write_error_text(path: str, exc: OSError) -> str:
    return f"cannot write {path}: {exc.strerror or exc}"


# -- netfilter -------------------------------------------------------------------------

def cmd_netfilter(args) -> int:
    blocked = {"tcp": 0, "udp": 0, "other": 0}
    if args.workers > 1:
        totals = _run_workers(args, _netfilter_work, None, f"blocking {args.filter!r}")
        blocked = totals.get("blocked", blocked)
        stats = totals
    else:
        stop = _Stop()
        stop.install()
        handle = _open_handle(args, Flag(0))
        with handle:
            _say(f"divert: blocking {args.filter!r} (priority {args.priority}); Ctrl+C to stop", sys.stderr)
            with _LossWarnings(handle.stats):
                while not stop:
                    _block_batch(handle, blocked)
            stats = handle.stats()
    _say(f"divert: blocked {blocked['tcp']} TCP (RST), {blocked['udp']} UDP (ICMP unreachable), "
         f"{blocked['other']} other (dropped)", sys.stderr)
    return _report_loss(args, stats) or EXIT_OK


def _block_batch(handle, blocked: dict) -> None:
    """Drops what `handle` receives within POLL_SECONDS, answering TCP with RST and UDP with ICMP unreachable."""
    from divertgui.engine import replies
    for packet in handle.recv_batch(64, POLL_SECONDS):
        if packet.tcp is not None:
            reply, kind = replies.tcp_reset(packet), "tcp"
        elif packet.udp is not None:
            reply, kind = replies.icmp_unreachable(packet), "udp"
        else:
            reply, kind = None, "other"
        handle.drop(packet)
        if reply is not None:
            handle.send(reply)
        blocked[kind] += 1
        _say(f"BLOCK {summary_line(packet, sum(blocked.values()))}"
             + (" (answered with RST)" if kind == "tcp" and reply is not None
                else " (answered with ICMP unreachable)" if kind == "udp" else ""))


def _netfilter_work(handle, stop, _options) -> dict:
    blocked = {"tcp": 0, "udp": 0, "other": 0}
    while not stop.is_set():
        _block_batch(handle, blocked)
    return {"blocked": blocked}


# -- workers ---------------------------------------------------------------------------

def _workers(text: str) -> int:
    from divertgui.engine.worker_pool import worker_count
    try:
        count = worker_count(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of workers or auto: {text!r}") from None
    if not 1 <= count <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"{count} is outside 1..{MAX_WORKERS}")
    return count


MAX_WORKERS = 64


def _run_workers(args, work, options, doing: str, queue_length: int | None = None,
                 diverted: str | None = None, flags: Flag = Flag(0), stop: _Stop | None = None,
                 quiet: bool = False, slot_options=None) -> dict:
    """`work` in args.workers processes, each with its own queue of the handle's packets; the summed counters."""
    from divertgui.engine.worker_pool import WorkerPool
    _compile(args.filter, LAYERS[args.layer])
    _require_privilege()
    if stop is None:
        stop = _Stop()
        stop.install()
    if getattr(args, "duration", None):
        timer = threading.Timer(args.duration, stop.event.set)
        timer.daemon = True
        timer.start()
    pool = WorkerPool(diverted or args.filter, work, args.workers, LAYERS[args.layer], args.priority, flags,
                      getattr(args, "queue_length", None) or queue_length, options, slot_options)
    with _LossWarnings(pool.totals):
        return pool.run(stop.event, on_ready=None if quiet else lambda: _say(
            f"divert: {doing} (priority {args.priority}, {args.workers} worker processes, queues "
            f"{pool.first_queue}..{pool.first_queue + args.workers - 1}); Ctrl+C to stop", sys.stderr))


# -- webfilter, streamdump --------------------------------------------------------------

def _sample_runner(sample):
    def run(args) -> int:
        stop = _Stop()
        stop.install()

        def open_handle(filter_text: str, priority: int):
            args.filter, args.layer, args.priority = filter_text, "network", priority
            return _open_handle(args, Flag(0))

        try:
            return sample.run(args, open_handle, stop, _say, lambda text: _say(text, sys.stderr), POLL_SECONDS)
        except UsageError as exc:
            _error(str(exc))
            return EXIT_USAGE
    return run


cmd_webfilter = _sample_runner(webfilter)
cmd_streamdump = _sample_runner(streamdump)


# -- passthru --------------------------------------------------------------------------

def cmd_passthru(args) -> int:
    if args.workers > 1:
        return _passthru_workers(args)
    stop = _Stop()
    stop.install()
    handle = _open_handle(args, Flag(0))
    passed = [0] * args.threads
    failures: list[BaseException] = []

    def reinject(slot: int) -> None:
        try:
            for count in _paced_passes(handle, args.batch, args.gather, stop.event):
                passed[slot] += count
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
            stop.event.set()

    started = time.monotonic()
    with handle:
        _say(f"divert: passing {args.filter!r} through (priority {args.priority}, batch {args.batch}, "
             f"{args.threads} thread{'s' if args.threads > 1 else ''}); Ctrl+C to stop", sys.stderr)
        workers = [threading.Thread(target=reinject, args=(i,), daemon=True) for i in range(args.threads)]
        with _LossWarnings(handle.stats):
            for worker in workers:
                worker.start()
            while not stop and (args.duration is None or time.monotonic() - started < args.duration):
                stop.event.wait(min(POLL_SECONDS, args.duration or POLL_SECONDS))
            stop.event.set()
            for worker in workers:
                worker.join(timeout=5)
        stats = handle.stats()
    elapsed = max(time.monotonic() - started, 1e-9)
    total = sum(passed)
    _say(f"passthru: {total} packets in {elapsed:.2f} s ({total / elapsed:.0f} pkt/s)")
    keys = ("diverted", "sent", "dropped", "expired", "overflowed", "bypassed", "rejected", "lost_messages")
    _say("counters: " + " ".join(f"{key}={stats.get(key, 0)}" for key in keys))
    lost = _report_loss(args, stats)
    if failures:
        _error(f"passthru stopped: {_first_sentence(failures[0])}")
        return EXIT_FAILURE
    return lost or EXIT_OK


def _paced_passes(handle, batch: int, gather: float, stop: threading.Event):
    """The packet counts of the handle's pass_batch reads until `stop` is set, each read
    after the pause ReadPacing gives (gather: its most wait)."""
    pacing = ReadPacing(gather)
    while not stop.is_set():
        count = handle.pass_batch(batch, POLL_SECONDS)
        yield count
        pause = pacing.wait_after(count, full=count == batch)
        if pause:
            time.sleep(pause)


def _passthru_work(handle, stop, options: tuple[int, float]) -> dict:
    batch, gather = options
    return {"passed": sum(_paced_passes(handle, batch, gather, stop))}


def _passthru_workers(args) -> int:
    started = time.monotonic()
    totals = _run_workers(args, _passthru_work, (args.batch, args.gather), f"passing {args.filter!r} through")
    elapsed = max(time.monotonic() - started, 1e-9)
    total = totals.get("passed", 0)
    _say(f"passthru: {total} packets in {elapsed:.2f} s ({total / elapsed:.0f} pkt/s)")
    keys = ("diverted", "sent", "dropped", "expired", "overflowed", "bypassed", "rejected", "lost_messages",
            "workers_restarted", "lost_with_worker", "dropped_without_worker")
    _say("counters: " + " ".join(f"{key}={totals.get(key, 0)}" for key in keys if key in totals or
                                 not key.startswith(("workers", "lost_with", "dropped_without"))))
    return _report_loss(args, totals) or EXIT_OK


# -- conditions ---------------------------------------------------------------------------

def cmd_conditions(args) -> int:
    """Lag, loss and the other rules on the packets FILTER selects; the counters on SIGINT/SIGTERM."""
    from divertgui.engine.rules import RuleError
    from divertgui.engine.rules.cli_args import (CONDITIONS_QUEUE_LENGTH, FORWARD_OUTBOUND, format_stats,
                                                 pipeline_from_args)
    from divertgui.engine.rules.runner import run_conditions
    try:
        pipeline = pipeline_from_args(args)
    except RuleError as exc:
        _error(f"conditions: {exc}")
        return EXIT_USAGE
    if not pipeline.rules:
        _error("conditions: no condition given (use --lag, --drop, ... or --profile)")
        return EXIT_USAGE
    applied = [rule.name for rule in pipeline.rules if rule.enabled]
    if not applied:
        _error(f"conditions: every rule of profile {args.profile!r} is disabled (\"enabled\": false), so there "
               "is nothing to apply; add a condition (--lag, --drop, ...), or set \"enabled\": true on a rule "
               "of the profile (for a preset, in a copy given as --profile FILE)")
        return EXIT_USAGE
    disabled = len(pipeline.rules) - len(applied)
    doing = f"applying {', '.join(applied)} to {args.filter!r}" + (
        f", not the profile's {disabled} disabled rule{'s' if disabled > 1 else ''}" if disabled else "")
    _compile(args.filter, LAYERS[args.layer])  # a bad FILTER is said before what the rules make of it
    diverted = pipeline.divert_filter(args.filter, LAYERS[args.layer])
    if diverted == "false":
        _error(f"conditions: {FORWARD_OUTBOUND}, so the profile's rules, all inbound, would apply to none")
        return EXIT_USAGE
    if args.workers > 1:
        from divertgui.engine.worker_pool import worker_seed
        per_worker = [{"rules": pipeline.to_dicts(), "seed": worker_seed(args.seed, slot), "gather": args.gather}
                      for slot in range(args.workers)]
        totals = _run_workers(args, _conditions_work, None, doing, CONDITIONS_QUEUE_LENGTH, diverted,
                              slot_options=per_worker)
        stats, handle_stats = totals.get("conditions", pipeline.stats()), totals
    else:
        stop = _Stop()
        stop.install()
        # Lagged and throttled packets wait in the kernel queue: give them room.
        handle = _open_handle(args, Flag(0), queue_length=CONDITIONS_QUEUE_LENGTH, diverted=diverted)
        with handle:
            _say(f"divert: {doing} (priority {args.priority}); Ctrl+C to stop", sys.stderr)
            with _LossWarnings(handle.stats):
                stats = run_conditions(handle, pipeline, stop.event, gather=args.gather)
            handle_stats = handle.stats()
    _say(format_stats(stats, [rule.enabled for rule in pipeline.rules]))
    handle_stats = dict(handle_stats, send_failed=stats.get("send_failed", 0))
    if stats.get("send_failed"):
        _error(f"{stats['send_failed']} packets were dropped because a rule's edit made them too large to send"
               + (f": {stats['first_send_failure']}" if stats.get("first_send_failure") else ""))
    if stats.get("first_send_error"):
        _error(f"{stats['send_errors']} packets made by the rules could not be injected: "
               f"{stats['first_send_error']}")
    return _report_loss(args, handle_stats) or EXIT_OK


def _conditions_work(handle, stop, options) -> dict:
    from divertgui.engine.rules import Pipeline
    from divertgui.engine.rules.runner import run_conditions
    pipeline = Pipeline.from_dicts(options["rules"], seed=options["seed"])
    return {"conditions": run_conditions(handle, pipeline, stop, gather=options["gather"])}


# -- check, list, cleanup ---------------------------------------------------------------

def cmd_check(args) -> int:
    from divertgui.engine.filter import FilterError, format_filter
    try:
        _say(format_filter(args.filter, LAYERS[args.layer]))
    except FilterError as exc:
        _say(filter_error_text(args.filter, exc), sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _rules_module():
    from divertgui.engine.backends import netfilter_rules
    _require_privilege()
    return netfilter_rules


_HOOK_NAMES = {"P": "prerouting", "I": "input", "O": "output", "F": "forward"}


def cmd_list(args) -> int:
    from divertgui import handle_commands
    rules = _rules_module()
    handle_commands.print_handles(_say)
    _say("")
    chains = rules.list_handles()
    if not chains:
        _say("no divertgui handles in this network namespace")
        return EXIT_OK
    # PACKETS: what the chain's target took (queued, or dropped), as its rules' counters say.
    _say(f"{'PID':>7}  {'STATE':<7} {'QUEUE':>6} {'PRIORITY':>8}  {'IP':<4} {'HOOK':<10} {'TARGET':<7} "
         f"{'PACKETS':>9}  CHAIN")
    for chain in sorted(chains, key=lambda c: (c.pid, c.queue, -c.level, c.version, c.hook)):
        state = "running" if rules.pid_alive(chain.pid) else "dead"
        packets = "-" if chain.packets is None else f"{chain.packets:,}"
        _say(f"{chain.pid:>7}  {state:<7} {chain.queue:>6} {chain.priority:>8}  v{chain.version:<3} "
             f"{_HOOK_NAMES.get(chain.hook, chain.hook):<10} {chain.target or '-':<7} {packets:>9}  {chain.name}")
    return EXIT_OK


def cmd_cleanup(args) -> int:
    from divertgui.engine.backends import handle_registry
    rules = _rules_module()
    removed = rules.cleanup(dead_only=not args.all)
    forgotten = handle_registry.sweep()
    if forgotten:
        _say(f"forgot {len(forgotten)} registry entr{'ies' if len(forgotten) != 1 else 'y'} of handles whose "
             f"process is gone", sys.stderr)
    if not removed:
        _say("nothing to remove" + ("" if args.all else " (no rules left by dead processes)"))
        return EXIT_OK
    pids = sorted({c.pid for c in removed})
    _say(f"removed {len(removed)} chain{'s' if len(removed) != 1 else ''} of process"
         f"{'es' if len(pids) != 1 else ''} {', '.join(map(str, pids))}")
    return EXIT_OK


def cmd_watch(args) -> int:
    from divertgui import handle_commands
    _require_privilege()
    stop = _Stop()
    stop.install()
    _compile(args.filter, Layer.REFLECT)
    handle_commands.watch(_say, stop, args.count, args.filter)
    return EXIT_OK


def cmd_kill(args) -> int:
    from divertgui import handle_commands
    _require_privilege()
    from divertgui.engine.backends.netfilter_rules import pid_owner
    uid = os.geteuid()
    # A user stops only its own processes; root, any.
    holders = sorted(pid for pid in {entry.pid for entry in handle_commands.live_entries()} - {os.getpid()}
                     if uid == 0 or pid_owner(pid) == uid)
    pids = holders if args.all else args.pids
    if not args.all:
        strangers = [pid for pid in pids if pid not in holders]
        if strangers:
            yours = "" if uid == 0 else " of yours"
            _error(f"no divert handle{yours} is open in process {', '.join(map(str, strangers))} "
                   f"(`divert list` shows them)")
            return EXIT_USAGE
    if not pids:
        _say("no process holds a divert handle")
        return EXIT_OK
    handle_commands.kill(pids, _say)
    return EXIT_OK


def _event_sample(args, layer: Layer, run) -> int:
    """socketdump and flowtrack: a bad filter is a usage error, then the privilege, then `run(stop)`."""
    _compile(args.filter, layer)
    _require_privilege()
    stop = _Stop()
    stop.install()
    run(stop)
    return EXIT_OK


def _event_sample_ready(args):
    where = f" of the cgroup {args.cgroup}" if args.cgroup else ""
    return lambda: _say(f"divert: watching {args.filter!r}{where} (priority {args.priority}); Ctrl+C to stop",
                        sys.stderr)


def cmd_socketdump(args) -> int:
    from divertgui import event_samples
    return _event_sample(args, Layer.SOCKET, lambda stop: event_samples.socketdump(
        args.filter, args.block, _say, stop, args.count, args.priority, args.cgroup, _event_sample_ready(args)))


def cmd_flowtrack(args) -> int:
    from divertgui import event_samples
    return _event_sample(args, Layer.FLOW, lambda stop: event_samples.flowtrack(
        args.filter, _say, stop, args.count, args.priority, args.cgroup, _event_sample_ready(args)))


# -- doctor ------------------------------------------------------------------------------

def _check_root():
    from divertgui.engine import privileges
    missing = privileges.missing_capabilities()
    if not missing:
        who = "root" if os.geteuid() == 0 else "given to this user's process, not root"
        return True, f"running with CAP_NET_ADMIN and CAP_NET_RAW ({who})", ""
    if privileges.may_divert():
        return True, "running with CAP_NET_ADMIN; without CAP_NET_RAW new packets cannot be injected", ""
    return False, f"no {' and no '.join(missing)}: netfilter rules cannot be changed", \
        privileges.how_to_get(missing)


def _check_rule_lock():
    """Opens the rule lock as a capture does (and closes it at once: it is never locked here), but
    creates nothing: where this process would make the lock, says so instead."""
    from divertgui.engine.backends import netfilter_rules
    from divertgui.engine.errors import NetfilterError
    directory = netfilter_rules.LOCK_DIRECTORY
    path = os.path.join(directory, netfilter_rules.LOCK_FILE)
    try:
        if os.geteuid() == 0 and not os.path.lexists(path):
            if os.path.lexists(directory):
                os.close(netfilter_rules.open_lock_directory())
            return True, f"the rule lock {path} does not exist yet: this process, as root, makes it at its " \
                         f"first capture ({_new_lock_kind()})", ""
        os.close(netfilter_rules.open_rule_lock())
    except NetfilterError as exc:
        return False, str(exc), _rule_lock_fix(exc, directory, path)
    return True, f"the rule lock {path} opens: rule changes take turns with other divertgui processes", ""


def _new_lock_kind() -> str:
    import grp
    from divertgui.engine.privileges import CAPTURE_GROUP
    try:
        grp.getgrnam(CAPTURE_GROUP)
    except KeyError:
        return f"root's alone, mode 0600, as there is no group {CAPTURE_GROUP}"
    return f"root:{CAPTURE_GROUP}, mode 0640"


def _rule_lock_fix(error: Exception, directory: str, path: str) -> str:
    import grp
    import pwd
    from divertgui.engine.privileges import CAPTURE_GROUP
    if isinstance(error.__cause__, PermissionError):
        try:
            info = os.stat(path)
        except OSError:
            return f"`sudo chmod 0755 {directory}`"
        try:
            user = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            user = f"uid {os.getuid()}"
        if info.st_mode & stat.S_IRGRP and info.st_gid != 0:
            try:
                group = grp.getgrgid(info.st_gid).gr_name
            except KeyError:
                group = str(info.st_gid)
            return f"the lock belongs to the group {group}: add {user} to it (`sudo usermod -aG {group} {user}`) " \
                   f"and log in again"
        return f"the lock is not the capture group's: `sudo chgrp {CAPTURE_GROUP} {path} && sudo chmod 0640 {path}`, " \
               f"then add {user} to the group {CAPTURE_GROUP} and log in again"
    return f"run packaging/install-linux.sh as root (it makes the group {CAPTURE_GROUP}), then " \
           f"`sudo install -d -o root -g root -m 0755 {directory} && " \
           f"sudo install -o root -g {CAPTURE_GROUP} -m 0640 /dev/null {path}` (what the installer's tmpfiles.d entry does at boot)"


def _kernel_config() -> dict[str, str]:
    import gzip
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            return dict(line.strip().split("=", 1) for line in f if "=" in line and not line.startswith("#"))
    except OSError:
        return {}


def _kernel_has(option: str, module: str, proc_file: str | None = None) -> bool | None:
    if proc_file and os.path.exists(proc_file):
        return True
    config = _kernel_config()
    if option in config:
        return config[option] in ("y", "m")
    release = os.uname().release
    for directory, _, files in os.walk(f"/lib/modules/{release}/kernel/net"):
        if any(name.startswith(module + ".ko") for name in files):
            return True
    return None


def _check_nftables():
    tables = _kernel_has("CONFIG_NF_TABLES", "nf_tables")
    compat = _kernel_has("CONFIG_NFT_COMPAT", "nft_compat")
    if tables and compat:
        return True, "nf_tables with nft_compat: handles' rules are made over netlink", ""
    if tables is False or compat is False:
        lacking = " and ".join(name for name, has in (("nf_tables", tables), ("nft_compat", compat)) if has is False)
        return False, f"the kernel has no {lacking}", \
            "use a kernel built with CONFIG_NF_TABLES and CONFIG_NFT_COMPAT (or modprobe nf_tables nft_compat)"
    return None, "cannot tell whether the kernel has nf_tables and nft_compat", "modprobe nf_tables nft_compat"


def _check_nfqueue():
    has = _kernel_has("CONFIG_NETFILTER_NETLINK_QUEUE", "nfnetlink_queue", "/proc/net/netfilter/nfnetlink_queue")
    target = _kernel_has("CONFIG_NETFILTER_XT_TARGET_NFQUEUE", "xt_NFQUEUE")
    if has and target is not False:
        return True, "NFQUEUE (nfnetlink_queue) available", ""
    if has is None:
        return None, "cannot tell whether the kernel has NFQUEUE", "modprobe nfnetlink_queue xt_NFQUEUE"
    return False, "the kernel has no NFQUEUE support", "modprobe nfnetlink_queue xt_NFQUEUE, or use a kernel built with it"


def _check_xt_bpf():
    from divertgui.engine.filter.kernel import xt_bpf_available
    if xt_bpf_available():
        return True, "xt_bpf match available: filters are tested in the kernel", ""
    return False, "no xt_bpf match: every packet of a handle's IP version crosses to user space first", \
        "modprobe xt_bpf (CONFIG_NETFILTER_XT_MATCH_BPF)"


def _check_netns():
    if not shutil.which("ip"):
        return False, "no `ip` command", "apt-get install iproute2"
    if not os.path.exists("/proc/self/ns/net"):
        return False, "the kernel has no network namespaces", "use a kernel built with CONFIG_NET_NS"
    return True, "network namespaces and iproute2 available", ""


def _check_display():
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    try:
        import importlib.util
        if importlib.util.find_spec("PySide6") is None:
            return False, "PySide6 is not installed: no GUI", "pip install PySide6-Essentials"
    except (ImportError, ValueError):
        return False, "PySide6 is not importable: no GUI", "pip install PySide6-Essentials"
    if platform in ("offscreen", "minimal"):
        return True, f"Qt platform {platform} (no window will show)", ""
    if os.environ.get("WAYLAND_DISPLAY") or os.environ.get("DISPLAY"):
        return True, "a display is available for the GUI", ""
    return False, "no display (DISPLAY/WAYLAND_DISPLAY unset): the GUI cannot open a window", \
        "run the GUI in a desktop session, or set QT_QPA_PLATFORM=offscreen for headless use"


DOCTOR_CHECKS = (("root", _check_root), ("rule lock", _check_rule_lock), ("nf_tables", _check_nftables), ("NFQUEUE", _check_nfqueue),
                 ("xt_bpf", _check_xt_bpf), ("netns", _check_netns), ("Qt display", _check_display))
REQUIRED_FOR_DIVERTING = {"root", "rule lock", "nf_tables", "NFQUEUE"}


def cmd_serve(args) -> int:
    from divertgui.service.serve import serve
    return serve(args)


def cmd_doctor(args) -> int:
    blocking = False
    for name, check in DOCTOR_CHECKS:
        try:
            ok, what, fix = check()
        except Exception as exc:  # a check that breaks is itself a finding
            ok, what, fix = None, f"check failed: {exc}", ""
        mark = {True: "ok     ", False: "MISSING", None: "UNKNOWN"}[ok]
        _say(f"{mark} {name:<11} {what}" + (f"\n{'':19} fix: {fix}" if fix and ok is not True else ""))
        if ok is False and name in REQUIRED_FOR_DIVERTING:
            blocking = True
    _say("diverting packets: " + ("not possible until the MISSING items above are fixed" if blocking
                                    else "possible"))
    return EXIT_FAILURE if blocking else EXIT_OK


# -- arguments --------------------------------------------------------------------------

def _cgroup(text: str) -> str:
    """--cgroup: an existing cgroup under the cgroup v2 mount, checked as the service checks one."""
    from divertgui.engine.backends.cgroups import CgroupError, cgroup_directory, relative_cgroup
    try:
        cgroup_directory(relative_cgroup(text, "PATH"))
    except CgroupError as exc:
        raise argparse.ArgumentTypeError(exc.strerror) from None
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _cgroup_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cgroup", metavar="PATH", type=_cgroup, default="",
                        help="only the processes of this cgroup v2, a path under the cgroup mount such as "
                             "system.slice/nginx.service (default: every process)")


def _gather_microseconds(text: str) -> float:
    try:
        return most_wait_from_microseconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds more than 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    from divertgui.engine.rules.cli_args import CONDITIONS_DESCRIPTION, add_condition_options, add_loss_options
    from divertgui.engine.rules.cli_args import priority
    from divertgui.engine.rules.cli_args import whole_number as _bounded
    parser = argparse.ArgumentParser(prog="divert", description="Capture, block and re-inject packets chosen by "
                                     "a WinDivert filter (Linux: netfilter NFQUEUE).")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    workers_option = dict(
        type=_workers, default=1, metavar="N",
        help=f"worker processes sharing the packets, each flow staying on one, 1..{MAX_WORKERS} or auto "
             "(the cores; default 1)")

    gather_option = dict(
        type=_gather_microseconds, default=DEFAULT_MOST_WAIT, metavar="MICROSECONDS",
        help="under a flood, wait up to this long after a read for the next one to find about "
             f"{GATHER_TARGET} packets, which costs far less per packet; 0 reads again at once "
             f"(default {DEFAULT_MOST_WAIT * 1e6:.0f})")

    def diverting(name: str, help_text: str, description: str | None = None) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=description or help_text)
        sub.add_argument("filter", metavar="FILTER", help="WinDivert filter, e.g. \"tcp.DstPort == 80\"")
        sub.add_argument("--priority", type=priority, default=0, help="handle priority, -30000..30000 (default 0)")
        sub.add_argument("--layer", choices=sorted(LAYERS), default="network",
                         help="network: packets to/from this machine; forward: routed through it")
        return sub

    netdump = diverting("netdump", "sniff matching packets and print one line each")
    netdump.add_argument("-w", "--write", metavar="FILE.pcapng", help="also write the packets to a pcapng file")
    netdump.add_argument("-c", "--count", type=_bounded(1, 1 << 62), metavar="N", help="stop after N packets")
    netdump.add_argument("-v", "--verbose", action="store_true", help="print every header field and the bytes")
    netdump.add_argument("-q", "--quiet", action="store_true", help="print nothing per packet")
    netdump.add_argument("--strict", action="store_true",
                         help="exit with status 3 if the kernel could not deliver every copy")
    netdump.add_argument("--workers", **workers_option)
    netdump.set_defaults(run=cmd_netdump)

    netfilter = diverting("netfilter", "block matching packets: TCP answered with RST, UDP with ICMP "
                                       "port unreachable, the rest dropped")
    add_loss_options(netfilter)
    netfilter.add_argument("--workers", **workers_option)
    netfilter.set_defaults(run=cmd_netfilter)

    passthru = diverting("passthru", "divert matching packets and re-inject them unchanged")
    passthru.add_argument("--batch", type=_bounded(1, 255), default=64, metavar="N",
                          help="packets per receive and send call, 1..255 (default 64)")
    passthru.add_argument("--threads", type=_bounded(1, 64), default=1, metavar="N",
                          help="threads receiving and re-injecting (default 1)")
    passthru.add_argument("--workers", **workers_option)
    passthru.add_argument("--gather", **gather_option)
    passthru.add_argument("--duration", type=_positive_seconds, metavar="SECONDS",
                          help="stop after this long (default: until SIGINT/SIGTERM)")
    add_loss_options(passthru)
    passthru.set_defaults(run=cmd_passthru)

    webfilter.add_parser(commands).set_defaults(run=cmd_webfilter)
    streamdump.add_parser(commands).set_defaults(run=cmd_streamdump)

    conditions = diverting("conditions", "apply network conditions (lag, loss, ...) to the packets a filter selects",
                           CONDITIONS_DESCRIPTION)
    add_condition_options(conditions)
    conditions.add_argument("--workers", **workers_option)
    conditions.add_argument("--gather", **gather_option)
    conditions.set_defaults(run=cmd_conditions)

    check = commands.add_parser("check", help="print a filter's canonical form, or where it is wrong")
    check.add_argument("filter", metavar="FILTER")
    check.add_argument("--layer", choices=sorted(LAYERS), default="network")
    check.set_defaults(run=cmd_check)

    listing = commands.add_parser("list", help="the machine's open handles (filter, layer, priority, flags, "
                                               "process) and our rules in this network namespace")
    listing.set_defaults(run=cmd_list)
    watch = commands.add_parser("watch", help="print divert handles opening and closing (the REFLECT layer)")
    watch.add_argument("filter", metavar="FILTER", nargs="?", default="true",
                       help="REFLECT-layer filter, e.g. \"layer == NETWORK and processId == 1234\"")
    watch.add_argument("-c", "--count", type=_bounded(1, 1 << 62), metavar="N", help="stop after N events")
    watch.set_defaults(run=cmd_watch)
    kill = commands.add_parser("kill", help="stop the processes holding divert handles (SIGTERM, then SIGKILL "
                                            "after 5 s) and remove the rules they leave")
    kill.add_argument("pids", metavar="PID", type=_bounded(1, (1 << 22)), nargs="*")
    kill.add_argument("--all", action="store_true", help="every process holding a handle but this one")
    kill.set_defaults(run=cmd_kill)
    socketdump = commands.add_parser("socketdump", help="print socket operations (bind, connect, listen, accept, "
                                                        "close) with their process")
    socketdump.add_argument("filter", metavar="FILTER", nargs="?", default="true",
                            help="SOCKET-layer filter, e.g. \"event == CONNECT and remotePort == 443\"")
    socketdump.add_argument("--block", action="store_true",
                            help="refuse the matching operations (they fail with EPERM); BIND and CONNECT only")
    socketdump.add_argument("--priority", type=priority, default=0, help="handle priority, -30000..30000")
    socketdump.add_argument("-c", "--count", type=_bounded(1, 1 << 62), metavar="N", help="stop after N events")
    _cgroup_argument(socketdump)
    socketdump.set_defaults(run=cmd_socketdump)
    flowtrack = commands.add_parser("flowtrack", help="print TCP and UDP flows as they are established and "
                                                      "deleted, with their process")
    flowtrack.add_argument("filter", metavar="FILTER", nargs="?", default="true",
                           help="FLOW-layer filter, e.g. \"remotePort == 443\"")
    flowtrack.add_argument("--priority", type=priority, default=0, help="handle priority, -30000..30000")
    flowtrack.add_argument("-c", "--count", type=_bounded(1, 1 << 62), metavar="N", help="stop after N events")
    _cgroup_argument(flowtrack)
    flowtrack.set_defaults(run=cmd_flowtrack)
    cleanup = commands.add_parser("cleanup", help="remove rules left by processes that are gone")
    cleanup.add_argument("--all", action="store_true", help="remove every divertgui rule, live processes' too")
    cleanup.set_defaults(run=cmd_cleanup)

    serve = commands.add_parser("serve", help="run a capture service for divertgui windows",
                                description="Run a capture service: a session driven by one client on "
                                            "standard input/output, or by the allowed clients of a Unix socket.")
    serve.add_argument("--listen", metavar="PATH", help="listen on this Unix socket instead of standard input/output")
    serve.add_argument("--allow-uid", metavar="UID", type=_bounded(0, (1 << 32) - 2), action="append",
                       help="with --listen: a user id that may connect (repeatable; the service's own always may)")
    serve.add_argument("--allow-group", metavar="NAME", action="append",
                       help="with --listen: a group whose members may connect (repeatable)")
    serve.add_argument("--pipe", metavar="NAME", help=argparse.SUPPRESS if sys.platform != "win32" else
                       "Windows: serve the window that created this named pipe (how it starts the service elevated)")
    serve.set_defaults(run=cmd_serve)

    doctor = commands.add_parser("doctor", help="what works on this machine and what is missing")
    doctor.set_defaults(run=cmd_doctor)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 for --help
        return int(exc.code or 0)
    if not hasattr(args, "filter"):
        args.filter = ""
    set_for_packet_flow()
    if getattr(args, "workers", 1) > 1 and sys.platform.startswith("linux"):
        # Workers are forked from a server forked now, while this process has one thread.
        from divertgui.engine import fork_server
        fork_server.prepare()
    return _run_guarded(args.run, args)


if __name__ == "__main__":
    sys.exit(main())
