"""Details tree and hex/ASCII bytes, linked both ways."""

from PySide6.QtGui import QTextCursor

from divertgui.models.compose_templates import template
from divertgui.views.hex_view import BYTES_PER_LINE, HexView, hex_dump, parse_hex, HexError
from divertgui.views.packet_details import SPAN_ROLE, PacketDetails


def find_item(tree, prefix):
    stack = [tree.topLevelItem(i) for i in range(tree.topLevelItemCount())]
    while stack:
        item = stack.pop(0)
        if item.text(0).startswith(prefix):
            return item
        stack.extend(item.child(i) for i in range(item.childCount()))
    raise AssertionError(f"no tree item starts with {prefix!r}")


def highlighted_bytes(hex_view: HexView) -> set[int]:
    offsets = set()
    for selection in hex_view.extraSelections():
        cursor = selection.cursor
        block = cursor.block()
        column = cursor.selectionStart() - block.position()
        offset = hex_view.byte_at(block.blockNumber(), column)
        offsets.add(offset)
    return offsets


def test_selecting_a_field_highlights_its_bytes(qtbot):
    raw, _ = template("HTTP GET (IPv4)")
    details = PacketDetails()
    qtbot.addWidget(details)
    details.show()
    details.show_packet(raw)
    tcp = find_item(details.tree, "Transmission Control Protocol")
    port = find_item(details.tree, "Destination Port")
    assert port.data(0, SPAN_ROLE) == (22, 2)
    details.tree.setCurrentItem(port)
    assert details.hex.highlighted == (22, 2)
    assert highlighted_bytes(details.hex) == {22, 23}
    details.tree.setCurrentItem(tcp)
    assert details.hex.highlighted == (20, 20)
    http = find_item(details.tree, "Hypertext Transfer Protocol")
    assert http.data(0, SPAN_ROLE)[0] == 40


def test_clicking_a_byte_selects_its_field(qtbot):
    raw, _ = template("DNS query (IPv4 UDP)")
    details = PacketDetails()
    qtbot.addWidget(details)
    details.show()
    details.show_packet(raw)
    # Byte 8 is the IPv4 TTL: first line, ninth hex pair.
    block = details.hex.document().findBlockByNumber(0)
    cursor = QTextCursor(block)
    cursor.setPosition(block.position() + 6 + 8 * 3)
    details.hex.setTextCursor(cursor)
    assert details.tree.currentItem().text(0).startswith("Time to Live")
    assert details.hex.highlighted == (8, 1)
    # The ASCII column works too: byte 20 + 2 = UDP destination port.
    line, index = divmod(22, BYTES_PER_LINE)
    block = details.hex.document().findBlockByNumber(line)
    cursor = QTextCursor(block)
    cursor.setPosition(block.position() + 6 + BYTES_PER_LINE * 3 + 1 + index)
    details.hex.setTextCursor(cursor)
    assert details.tree.currentItem().text(0).startswith("Destination Port")


def test_modified_packet_shows_both_versions(qtbot):
    raw, _ = template("TCP SYN (IPv4)")
    edited = bytearray(raw)
    edited[8] = 1
    details = PacketDetails()
    qtbot.addWidget(details)
    details.show()
    details.show_packet(bytes(edited), original=raw)
    assert details.header.isVisible()
    assert find_item(details.tree, "Time to Live").text(0).endswith("1")
    details.version.setCurrentIndex(1)
    assert find_item(details.tree, "Time to Live").text(0).endswith("64")
    assert details.hex.data == raw


def test_truncated_packet_still_shows_its_bytes(qtbot):
    details = PacketDetails()
    qtbot.addWidget(details)
    details.show_packet(b"\x45\x00\x00")
    assert details.hex.data == b"\x45\x00\x00"
    assert details.tree.topLevelItemCount() >= 1


def test_hex_dump_and_parse_round_trip():
    data = bytes(range(40))
    dump = hex_dump(data)
    assert dump.splitlines()[1].startswith("0010  10 11 12")
    assert parse_hex("45 00\n00 1c") == b"\x45\x00\x00\x1c"
    try:
        parse_hex("45 0g")
    except HexError as exc:
        assert exc.position == 4
    else:
        raise AssertionError("bad hex accepted")
