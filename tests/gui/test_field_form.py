"""The intercept editor's field form: Wireshark's labels, attribute names as
tooltips, one-bit flags as checkboxes that write their bit, and an edited TTL
is what the held packet is forwarded with."""

import dpkt
import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QCheckBox, QLineEdit

from divertgui.engine.address import Address
from divertgui.engine.packet import Packet
from divertgui.engine.store import Verdict
from divertgui.views.packet_editor import PacketEditor
from tests.gui.conftest import start_demo
from tests.gui.test_intercept import checksums_valid, hold


def tcp_ipv4(flags=dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH, df=True) -> bytes:
    segment = dpkt.tcp.TCP(sport=40000, dport=80, seq=1000, ack=2000, flags=flags, data=b"GET / HTTP/1.0\r\n\r\n")
    ip = dpkt.ip.IP(src=bytes([10, 0, 0, 1]), dst=bytes([10, 0, 0, 2]), ttl=64, p=dpkt.ip.IP_PROTO_TCP,
                    df=int(df), data=segment)
    return bytes(ip)


def udp_ipv6() -> bytes:
    datagram = dpkt.udp.UDP(sport=5353, dport=53, data=b"query")
    datagram.ulen = len(bytes(datagram))
    ip6 = dpkt.ip6.IP6(src=bytes(15) + b"\x01", dst=bytes(15) + b"\x02", nxt=dpkt.ip.IP_PROTO_UDP, hlim=9,
                       data=datagram)
    ip6.plen = len(bytes(datagram))
    return bytes(ip6)


@pytest.fixture
def editor(qtbot):
    widget = PacketEditor()
    qtbot.addWidget(widget)
    widget.resize(520, 900)
    widget.show()
    return widget


WIRESHARK_LABELS = [
    ("ip", "hdr_len", "Header Length"), ("ip", "length", "Total Length"),
    ("ip", "frag_offset", "Fragment Offset"), ("ip", "ttl", "Time to Live"),
    ("ip", "checksum", "Header Checksum"), ("ip", "src_addr", "Source Address"),
    ("ip", "reserved_flag", "Reserved bit"), ("ip", "df", "Don't fragment"), ("ip", "mf", "More fragments"),
    ("tcp", "seq_num", "Sequence Number"), ("tcp", "ack_num", "Acknowledgment Number"),
    ("tcp", "urg_ptr", "Urgent Pointer"), ("tcp", "syn", "Syn"), ("tcp", "ack", "Acknowledgment"),
    ("payload", "bytes", "Data"),
]


def test_fields_are_labelled_as_in_wireshark_with_the_attribute_as_tooltip(editor):
    editor.set_packet(tcp_ipv4(), Address(outbound=True))
    form = editor.form
    for header, name, label in WIRESHARK_LABELS:
        assert form.label_of(header, name) == label, (header, name)
    for header, name, _ in WIRESHARK_LABELS[:-1]:
        assert form.field(header, name).toolTip() == name
    shown = [form.label_of(header, name) for header, name in list(form.edits) + list(form.checks)]
    assert not [text for text in shown if "_" in text], "a raw attribute name is shown as a label"


def test_one_bit_flags_are_checkboxes_and_the_bit_set_is_not_a_line(editor):
    editor.set_packet(tcp_ipv4(), Address(outbound=True))
    form = editor.form
    assert isinstance(form.field("ip", "df"), QCheckBox) and form.field("ip", "df").isChecked()
    assert not form.field("ip", "mf").isChecked()
    tcp_flags = {name for header, name in form.checks if header == "tcp"}
    assert tcp_flags == {"ns", "cwr", "ece", "urg", "ack", "psh", "rst", "syn", "fin"}
    assert form.field("tcp", "psh").isChecked() and not form.field("tcp", "syn").isChecked()
    assert ("ip", "flags") not in form.edits and ("tcp", "flags") not in form.edits
    assert isinstance(form.field("ip", "ttl"), QLineEdit)


def click_box(qtbot, check: QCheckBox) -> None:
    """Clicks the box itself: a checkbox takes clicks on its indicator and text, not its whole width."""
    qtbot.mouseClick(check, Qt.MouseButton.LeftButton, pos=QPoint(6, check.height() // 2))


def test_a_flag_checkbox_writes_its_bit_and_only_it(qtbot, editor):
    original = tcp_ipv4()
    editor.set_packet(original, Address(outbound=True))
    click_box(qtbot, editor.form.field("ip", "df"))
    click_box(qtbot, editor.form.field("tcp", "syn"))
    assert editor.is_changed()
    edited = Packet(editor.edited())
    assert not edited.ip.df and not edited.ip.mf and edited.ip.frag_offset == 0
    assert edited.tcp.syn and edited.tcp.ack and edited.tcp.psh and not edited.tcp.fin
    assert edited.tcp.flags == dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH
    assert checksums_valid(edited.raw)
    unchanged = Packet(bytearray(edited.raw))
    unchanged.ip.df, unchanged.tcp.syn = True, False
    unchanged.recalculate_checksums()
    assert unchanged.raw == original


def test_flag_edits_survive_a_trip_through_the_hex_tab(editor):
    editor.set_packet(tcp_ipv4(df=False), Address(outbound=True))
    editor.form.field("ip", "mf").setChecked(True)
    editor.tabs.setCurrentIndex(1)
    editor.tabs.setCurrentIndex(0)
    assert editor.form.field("ip", "mf").isChecked()
    assert Packet(editor.edited()).ip.mf


def test_ipv6_and_udp_labels(editor):
    editor.set_packet(udp_ipv6(), Address(outbound=True, ipv6=True))
    form = editor.form
    assert form.label_of("ipv6", "hop_limit") == "Hop Limit"
    assert form.label_of("ipv6", "length") == "Payload Length"
    assert form.label_of("udp", "length") == "Length"
    assert form.field("ipv6", "hop_limit").toolTip() == "hop_limit"
    assert not form.checks


def test_a_bad_value_names_the_field(qtbot, editor):
    editor.set_packet(tcp_ipv4(), Address(outbound=True))
    ttl = editor.form.field("ip", "ttl")
    ttl.setText("300")
    with pytest.raises(ValueError, match=r"ip\.ttl"):
        editor.edited()


def test_an_edited_ttl_is_what_the_held_packet_is_forwarded_with(qtbot, workbench):
    window = workbench.window
    start_demo(qtbot, workbench)
    panel = hold(qtbot, workbench, "ip and (tcp or udp)")
    hold_id = panel.current_id
    row = window.queue_model.store_row(window.queue_model.row_of(hold_id))
    original = workbench.store.raw(row)
    new_ttl = 3 if Packet(original).ip.ttl != 3 else 4
    ttl = panel.editor.form.field("ip", "ttl")
    assert panel.editor.form.label_of("ip", "ttl") == "Time to Live"
    ttl.clear()
    qtbot.keyClicks(ttl, str(new_ttl))
    qtbot.mouseClick(panel.forward_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: workbench.store.verdict(row) == Verdict.MODIFIED, timeout=5000)
    sent = Packet(workbench.store.raw(row))
    assert sent.ip.ttl == new_ttl
    assert checksums_valid(sent.raw)
    assert workbench.store.original(row) == original
    qtbot.keyClick(window.intercept.table, Qt.Key.Key_A, Qt.KeyboardModifier.ShiftModifier)
