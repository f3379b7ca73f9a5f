"""The `divert` CLI without traffic: check, doctor, argument and privilege errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from divertgui import cli
from divertgui.engine.address import Address
from divertgui.engine.packet import Packet

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_prints_the_canonical_form(capsys):
    code, out, err = run_main(capsys, "check", "tcp.DstPort == 80 or  udp")
    assert (code, out, err) == (0, "tcp.DstPort = 80 or udp\n", "")


def test_check_puts_a_caret_under_the_error(capsys):
    code, out, err = run_main(capsys, "check", "tcp.DstPort == 80 or udpp")
    assert code == 2 and out == ""
    message, shown, caret, hint = err.rstrip("\n").split("\n")
    assert message.startswith("divert: bad filter: ") and "position 21" in message
    assert shown == "  tcp.DstPort == 80 or udpp"
    assert caret == "  " + " " * 21 + "^"
    assert hint == "  did you mean `udp`?"


def test_check_offers_the_field_a_wrongly_cased_name_meant(capsys):
    code, out, err = run_main(capsys, "check", "TCP.dstport == 80")
    assert code == 2
    assert err.splitlines() == ["divert: bad filter: Filter expression contains a bad token (at position 0)",
                                "  TCP.dstport == 80", "  ^", "  did you mean `tcp.DstPort`?"]


def test_check_offers_nothing_for_a_word_close_to_no_name(capsys):
    code, out, err = run_main(capsys, "check", "frobnicate")
    assert code == 2 and "did you mean" not in err


def test_check_knows_the_layer(capsys):
    assert run_main(capsys, "check", "outbound", "--layer", "forward")[0] == 2
    assert run_main(capsys, "check", "outbound", "--layer", "network")[0] == 0


def test_a_bad_filter_is_a_usage_error_before_any_privilege_is_needed(capsys):
    code, out, err = run_main(capsys, "passthru", "tcp and TRUE")
    assert code == 2 and "bad filter" in err and "^" in err


@pytest.mark.parametrize("argv, complaint", [
    ((), "required"),
    (("frobnicate",), "invalid choice"),
    (("passthru",), "FILTER"),
    (("passthru", "tcp", "--batch", "0"), "outside 1..255"),
    (("passthru", "tcp", "--batch", "256"), "outside 1..255"),
    (("netdump", "tcp", "--priority", "30001"), "outside -30000..30000"),
    (("netdump", "tcp", "-c", "many"), "not a number"),
    (("netfilter", "tcp", "--layer", "socket"), "invalid choice"),
])
def test_argument_errors_exit_2_with_usage(capsys, argv, complaint):
    code, out, err = run_main(capsys, *argv)
    assert code == 2
    assert "usage: divert" in err and complaint in err


def test_help_exits_0(capsys):
    code, out, _ = run_main(capsys, "--help")
    assert code == 0 and "netdump" in out and "doctor" in out


def test_doctor_reports_every_prerequisite_with_a_fix(capsys):
    code, out, _ = run_main(capsys, "doctor")
    lines = out.splitlines()
    for name in ("root", "rule lock", "nf_tables", "NFQUEUE", "xt_bpf", "netns", "Qt display"):
        assert any(line[8:].startswith(name) for line in lines), (name, out)
    for i, line in enumerate(lines):
        if line.startswith("MISSING"):
            assert lines[i + 1].strip().startswith("fix: "), out
    assert lines[-1].startswith("diverting packets: ")
    assert code == (1 if "not possible" in lines[-1] else 0)


def test_doctor_sees_a_missing_display(capsys, monkeypatch):
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    _, out, _ = run_main(capsys, "doctor")
    assert "MISSING Qt display" in out and "QT_QPA_PLATFORM=offscreen" in out


def _unprivileged(args: list[str]) -> subprocess.CompletedProcess:
    """The CLI in a process without CAP_NET_ADMIN (dropped by setpriv when we are root)."""
    command = [sys.executable, "-m", "divertgui.cli", *args]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            reason = "setpriv (util-linux) is needed to drop privileges"
            if os.environ.get("CI") == "true":
                pytest.fail(f"missing prerequisite in CI: {reason}")
            pytest.skip(reason)
        command = ["setpriv", "--inh-caps=-all", "--bounding-set=-net_admin,-net_raw", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=REPO))


@pytest.mark.parametrize("args", [["passthru", "udp"], ["netdump", "tcp"], ["netfilter", "icmp"], ["list"],
                                  ["cleanup"]])
def test_missing_privilege_is_one_sentence_and_exit_1(args):
    done = _unprivileged(args)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "CAP_NET_ADMIN" in done.stderr and "root" in done.stderr


def _tcp_packet(flags: int, payload: bytes = b"", outbound=False) -> Packet:
    import struct
    segment = struct.pack("!HHIIBBHHH", 5555, 80, 1000, 2000, 5 << 4, flags, 100, 0, 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(segment), 1, 0, 64, 6, 0,
                         bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    packet = Packet(header + segment, Address(outbound=outbound, if_idx=3))
    packet.recalculate_checksums()
    return packet


def test_summary_line_has_direction_interface_and_headers():
    line = cli.summary_line(_tcp_packet(0x12, b"xy", outbound=True), 7)
    assert line.split()[:3] == ["7", "outbound", "if=3"]
    assert "IPv4 10.0.0.1 > 10.0.0.2" in line and "TCP 5555 > 80 [AS]" in line and "payload=2" in line
    assert "not IPv4/IPv6" in cli.summary_line(Packet(b"\x00" * 10), 1)


def _udp_packet_df(payload: bytes) -> Packet:
    import struct
    datagram = struct.pack("!HHHH", 5353, 53, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(datagram), 0xBEEF, 0x4000, 64, 17, 0,
                         bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    packet = Packet(header + datagram, Address(outbound=True, loopback=True, if_idx=1, timestamp=3_500_000_000))
    packet.recalculate_checksums()
    return packet


def test_verbose_block_is_laid_out_as_windivert_netdump_prints_it():
    from divertgui.engine.packet_hash import hash_packet
    packet = _udp_packet_df(b"netdump prints twenty bytes/line")
    raw = bytes(packet.raw)
    shown = "".join(chr(b) if chr(b).isascii() and chr(b).isprintable() else "." for b in raw)
    block = cli.detail_block(packet, 1_000_000_000)
    ip_sum, udp_sum = packet.ipv4.checksum, packet.udp.checksum
    assert block.split("\n") == [
        "",
        f"Packet [Timestamp=2.5, Direction=outbound IfIdx=1 SubIfIdx=0 Loopback=1 Impostor=0 "
        f"Hash=0x{hash_packet(raw):016X}]",
        "IPv4 [Version=4 HdrLength=5 TOS=0 Length=60 Id=0xBEEF Reserved=0 DF=1 MF=0 FragOff=0 TTL=64 "
        f"Protocol=17 Checksum=0x{ip_sum:04X} SrcAddr=10.0.0.1 DstAddr=10.0.0.2]",
        f"UDP [SrcPort=5353 DstPort=53 Length=40 Checksum=0x{udp_sum:04X}]",
        "",
        "\t" + raw[:20].hex().upper(),
        "\t" + raw[20:40].hex().upper(),
        "\t" + raw[40:].hex().upper(),
        "\t" + shown[:40],
        "\t" + shown[40:],
    ]
    assert shown.endswith("netdump prints twenty bytes/line")
    assert hash_packet(raw) != 0


def test_verbose_flow_label_is_the_value_windivert_netdump_prints():
    import socket
    import struct
    datagram = struct.pack("!HHHH", 5353, 53, 8, 0)
    header = struct.pack("!IHBB16s16s", 6 << 28 | 0x2A << 20 | 0xABCDE, len(datagram), 17, 64,
                         socket.inet_pton(socket.AF_INET6, "fd00::1"), socket.inet_pton(socket.AF_INET6, "fd00::2"))
    packet = Packet(header + datagram, Address(outbound=True))
    raw = bytes(packet.raw)
    # netdump.c: ntohl(WINDIVERT_IPV6HDR_GET_FLOWLABEL(hdr)) = ntohl((FlowLabel0 << 16) | FlowLabel1), where
    # FlowLabel0 is the low nibble of byte 1 and FlowLabel1 the little-endian UINT16 at byte 2 (on x86).
    native = (raw[1] & 0x0F) << 16 | struct.unpack_from("<H", raw, 2)[0]
    expected = struct.unpack("!I", struct.pack("<I", native))[0]
    ipv6_line = cli.detail_block(packet, 0).split("\n")[2]
    assert expected == 0xBCDE0A00 and packet.ipv6.flow_label == 0xABCDE
    assert ipv6_line.startswith(f"IPv6 [Version=6 TrafficClass=42 FlowLabel={expected} Length=8 NextHdr=17 ")


def test_verbose_tcp_flags_and_reserved_bits_print_as_integers():
    packet = _tcp_packet(0x12 | 0xC0)    # SYN ACK with CWR and ECE
    packet.tcp.ns = 1                    # the low bit beside the header length
    tcp_line = cli.detail_block(packet, 0).split("\n")[3]
    assert tcp_line.startswith("TCP [SrcPort=5555 DstPort=80 SeqNum=1000 AckNum=2000 HdrLength=5 "
                               "Reserved1=1 Reserved2=3 Urg=0 Ack=1 Psh=0 Rst=0 Syn=1 Fin=0 Window=100 Checksum=0x")
    assert "True" not in tcp_line and "False" not in tcp_line and tcp_line.endswith(" UrgPtr=0]")


def test_a_listed_handle_shows_its_layer_priority_flags_filter_and_command_line():
    """`divert list`, as `windivertctl list` does, shows each handle's flags beside the rest."""
    from divertgui.engine.address import Flag, Layer
    from divertgui.engine.backends.handle_registry import Entry
    from divertgui.handle_commands import HEADER, handle_line
    entry = Entry("x.json", os.getpid(), 0, Layer.NETWORK_FORWARD, -3, int(Flag.SNIFF | Flag.RECV_ONLY),
                  "tcp.DstPort == 80", 0)
    pid, layer, priority, flags, *rest = handle_line(entry).split()
    assert HEADER.split()[:5] == ["PID", "LAYER", "PRIORITY", "FLAGS", "FILTER"]
    assert (int(pid), layer, int(priority), set(flags.split("|"))) == \
        (os.getpid(), "NETWORK_FORWARD", -3, {"SNIFF", "RECV_ONLY"})
    with open(f"/proc/{os.getpid()}/cmdline", "rb") as cmdline:
        command = " ".join(part.decode() for part in cmdline.read().split(b"\0") if part)
    assert " ".join(rest) == f"'tcp.DstPort == 80'  {command}".replace("  ", " ")
