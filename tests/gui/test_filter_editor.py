"""The one filter editor, typed into as a user types."""

from PySide6.QtCore import Qt
from PySide6.QtGui import QTextCharFormat

from divertgui.views.filter_editor import VALID_COLOUR, INVALID_COLOUR, FilterEditor


def underlined_positions(editor):
    block = editor.edit.document().firstBlock()
    positions = set()
    for span in block.layout().formats():
        if span.format.underlineStyle() == QTextCharFormat.UnderlineStyle.WaveUnderline:
            positions.update(range(span.start, span.start + span.length))
    return positions


def make(qtbot, purpose="display"):
    editor = FilterEditor(purpose)
    qtbot.addWidget(editor)
    editor.show()
    return editor


def test_valid_filter_turns_green_and_applies_on_enter(qtbot):
    editor = make(qtbot)
    qtbot.keyClicks(editor.edit, "tcp.DstPort == 443")
    assert editor.is_valid()
    assert VALID_COLOUR.name() in editor.edit.styleSheet()
    assert not editor.message.isVisible()
    with qtbot.waitSignal(editor.applied) as applied:
        qtbot.keyClick(editor.edit, Qt.Key.Key_Return)
    assert applied.args == ["tcp.DstPort == 443"]


def test_bad_filter_is_red_before_enter_with_the_error_underlined_and_explained(qtbot):
    editor = make(qtbot)
    text = "tcp.DstPort == 80 and udp.Foo == 1"
    qtbot.keyClicks(editor.edit, text)
    assert not editor.is_valid()
    assert INVALID_COLOUR.name() in editor.edit.styleSheet()
    message, position = editor.error
    assert position == text.index("udp.Foo")
    assert min(underlined_positions(editor)) == position
    assert "bad token" in message
    assert editor.message.isVisible()
    assert f"position {position}:" in editor.message.text()
    applied = []
    editor.applied.connect(applied.append)
    qtbot.keyClick(editor.edit, Qt.Key.Key_Return)
    assert applied == []


def test_case_matters_as_in_windivert(qtbot):
    editor = make(qtbot)
    qtbot.keyClicks(editor.edit, "tcp AND udp")
    assert not editor.is_valid()
    assert editor.error[1] == 4
    assert 4 in underlined_positions(editor)


def test_fixing_the_error_clears_the_underline(qtbot):
    editor = make(qtbot)
    qtbot.keyClicks(editor.edit, "tcp and")
    assert not editor.is_valid()
    qtbot.keyClicks(editor.edit, " udp")
    assert editor.is_valid()
    assert underlined_positions(editor) == set()


def test_completion_offers_fields_and_inserts_the_choice(qtbot):
    editor = make(qtbot)
    qtbot.keyClicks(editor.edit, "tcp.Ds")
    completer = editor.edit.completer
    assert completer.popup().isVisible()
    offered = [completer.completionModel().index(i, 0).data() for i in range(completer.completionCount())]
    assert offered == ["tcp.DstPort"]
    editor.edit.insert_completion("tcp.DstPort")
    assert editor.text() == "tcp.DstPort"
    qtbot.keyClicks(editor.edit, " == HT")
    assert editor.text() == "tcp.DstPort == HT"
    editor.edit.completer.popup().hide()
    editor.set_text("protocol == IC")
    editor.edit.show_completions(force=True)
    offered = [completer.completionModel().index(i, 0).data() for i in range(completer.completionCount())]
    assert "ICMPV6" in offered and "ICMP" in offered


def test_history_and_presets(qtbot):
    editor = make(qtbot)
    for text in ("udp", "tcp", "udp"):
        editor.set_text(text)
        editor.submit()
    assert editor.history() == ["udp", "tcp"]
    editor._fill_menu()
    entries = [action.text() for action in editor.menu_button.menu().actions()]
    assert "udp" in entries and "tcp" in entries
    assert any(entry.endswith("outbound and loopback") for entry in entries)
    assert any("tcp.DstPort == 80 or tcp.SrcPort == 80 or udp.DstPort == 80" in entry for entry in entries)
    preset = next(a for a in editor.menu_button.menu().actions() if a.text().endswith(":  ipv6"))
    preset.trigger()
    assert editor.text() == "ipv6" and editor.is_valid()
    editor.save_as_preset()
    assert FilterEditor("capture").user_presets() == ["ipv6"]
    with open(FilterEditor.presets_path(), "a") as presets:
        presets.write("# mine\nudp.DstPort == 9999\n")
    editor._fill_menu()
    assert "★ udp.DstPort == 9999" in [a.text() for a in editor.menu_button.menu().actions()]


def test_layer_decides_what_is_valid(qtbot):
    from divertgui.views.filter_editor import engine_validator
    editor = make(qtbot, "capture")
    editor.set_text("outbound and tcp")
    assert editor.is_valid()
    editor.set_validator(engine_validator("NETWORK_FORWARD"))
    assert not editor.is_valid()
    assert editor.error[1] == 0


def test_enter_on_an_invalid_filter_says_why_it_was_not_applied(qtbot):
    editor = make(qtbot)
    qtbot.keyClicks(editor.edit, "tcp.DstPort == ")
    with qtbot.waitSignal(editor.refused) as refused:
        qtbot.keyClick(editor.edit, Qt.Key.Key_Return)
    assert refused.args[0].startswith("not applied: position ")
    assert editor.message.isVisible() and editor.message.text().startswith("not applied")


def test_a_mistyped_field_gets_a_did_you_mean(qtbot):
    editor = make(qtbot)
    qtbot.keyClicks(editor.edit, "TCP.dstport == 80")
    assert editor.error[1] == 0
    assert editor.suggestion == "tcp.DstPort"
    assert editor.message.text() == ("position 0: Filter expression contains a bad token; "
                                     "did you mean `tcp.DstPort`?")
