"""The rules panel on the real workbench: rules reach the session, counters come back."""

import json
import os

from PySide6.QtCore import QMimeData, QModelIndex, QPoint, Qt

from divertgui.models.rules_model import COLUMNS, COUNTER_COLUMNS, ERROR_BRUSH, ROW_MIME, RulesModel
from divertgui.views.filter_editor import INVALID_COLOUR
from tests.gui.conftest import start_demo
from tests.gui.test_screenshot_and_self_test import ARTIFACTS


def add_from_menu(panel, title: str) -> int:
    actions = {action.text(): action for action in panel.add_button.menu().actions()}
    before = panel.model.rowCount()
    actions[title].trigger()
    assert panel.model.rowCount() == before + 1
    return before


def click_box(qtbot, box) -> None:
    """A click on the check box's indicator (a wide box ignores clicks beside its text)."""
    qtbot.waitUntil(box.isVisible)
    qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=QPoint(6, box.height() // 2))


def session_kinds(bench) -> list[tuple[str, bool]]:
    return [(rule["kind"], rule["enabled"]) for rule in bench.bridge.session.rules]


def test_add_edit_enable_watch_counters_reorder_and_keep_profiles(qtbot, workbench):
    window = workbench.window
    panel = window.rules_panel
    window.rules_dock.show()
    window.rules_dock.raise_()
    row = add_from_menu(panel, "Lag")
    editor = panel.editor
    assert editor.row == row and not panel.model.rule(row)["enabled"], "a new rule starts switched off"
    inbound = editor.fields["inbound_ms"]
    assert inbound.value() == 50.0 and inbound.maximum() == 15000.0, "Clumsy's default and range"
    inbound.selectAll()
    qtbot.keyClicks(inbound.lineEdit(), "120")
    editor.fields["outbound_ms"].setValue(120.0)
    assert panel.model.rule(row)["inbound_ms"] == 120.0
    click_box(qtbot, editor.enabled)
    assert panel.model.rule(row)["enabled"]
    qtbot.waitUntil(lambda: session_kinds(workbench) == [("lag", True)], timeout=5000)
    assert workbench.bridge.session.rules[0]["inbound_ms"] == 120.0

    start_demo(qtbot, workbench)
    delayed_column = COLUMNS.index("Delayed")
    counters_shown = lambda: int(panel.model.index(row, delayed_column).data().replace(",", ""))  # noqa: E731
    qtbot.waitUntil(lambda: counters_shown() >= 20, timeout=10000)
    first = panel.model.counters(row)
    qtbot.waitUntil(lambda: panel.model.counters(row)["matched"] > first["matched"], timeout=5000)
    assert panel.model.counters(row)["delayed"] > first["delayed"]
    assert COUNTER_COLUMNS[delayed_column] == "delayed"
    qtbot.waitUntil(lambda: "p50 120.0 ms" in window.charts.delay_summary.text(), timeout=5000)
    assert window.delays.percentile(99) == 120.0
    ARTIFACTS.mkdir(exist_ok=True)
    assert window.grab().save(str(ARTIFACTS / "rules-panel.png"))

    drop = add_from_menu(panel, "Drop")
    assert panel.editor.fields["chance"].value() == 10.0 and panel.editor.fields["chance"].suffix() == " %"
    qtbot.mouseClick(panel.up_button, Qt.MouseButton.LeftButton)
    assert [panel.model.rule(r)["kind"] for r in range(2)] == ["drop", "lag"]
    assert panel.current_row() == drop - 1 and panel.editor.row == 0
    qtbot.waitUntil(lambda: session_kinds(workbench) == [("drop", False), ("lag", True)], timeout=5000)

    assert panel.save_profile("my lag")
    saved = os.path.join(os.environ["XDG_CONFIG_HOME"], "divertgui", "profiles", "my lag.json")
    assert [r["kind"] for r in json.load(open(saved))["rules"]] == ["drop", "lag"]
    assert panel.load_profile("preset: mobile-3g")
    assert [panel.model.rule(r)["kind"] for r in range(panel.model.rowCount())] == \
        ["lag", "drop", "bandwidth", "bandwidth"]
    qtbot.waitUntil(lambda: [k for k, _ in session_kinds(workbench)] == ["lag", "drop", "bandwidth", "bandwidth"],
                    timeout=5000)
    panel.profiles.setCurrentText("my lag")
    qtbot.mouseClick(panel.load_button, Qt.MouseButton.LeftButton)
    assert panel.model.to_dicts()[1]["inbound_ms"] == 120.0
    qtbot.waitUntil(lambda: session_kinds(workbench) == [("drop", False), ("lag", True)], timeout=5000)


def test_a_bad_rule_filter_shows_red_and_is_not_applied(qtbot, workbench):
    window = workbench.window
    panel = window.rules_panel
    row = add_from_menu(panel, "Drop")
    qtbot.waitUntil(lambda: session_kinds(workbench) == [("drop", False)], timeout=5000)
    editor = panel.editor
    qtbot.keyClicks(editor.filter.edit, "tcp.DstPort == 80 andd")
    assert not editor.filter.is_valid()
    assert INVALID_COLOUR.name() in editor.filter.edit.styleSheet()
    assert panel.model.index(row, 1).data(Qt.ItemDataRole.BackgroundRole) == ERROR_BRUSH
    assert editor.error.isVisible() and "rule 1: drop.filter" in editor.error.text()
    assert "position 18" in editor.filter.message.text()
    click_box(qtbot, editor.enabled)
    qtbot.waitUntil(lambda: panel.status.text().startswith("Not applied: rule 1"), timeout=5000)
    assert session_kinds(workbench) == [("drop", False)], "the session keeps the last valid rules"
    for _ in range(len(" andd")):
        qtbot.keyClick(editor.filter.edit, Qt.Key.Key_Backspace)
    assert editor.filter.is_valid() and panel.model.error(row) is None
    qtbot.waitUntil(lambda: session_kinds(workbench) == [("drop", True)], timeout=5000)
    assert workbench.bridge.session.rules[0]["filter"] == "tcp.DstPort == 80"


def test_an_out_of_range_value_from_the_session_marks_its_rule(qtbot, workbench):
    window = workbench.window
    panel = window.rules_panel
    add_from_menu(panel, "Lag")
    window.post("set_rules", rules=[{"kind": "lag", "inbound_ms": 20000.0}], version=panel.model.version)
    qtbot.waitUntil(lambda: panel.model.error(0) is not None, timeout=5000)
    assert "rule 1: lag.inbound_ms" in panel.model.error(0)
    assert window.error_banner.isVisible()


def test_rows_reorder_by_dragging(qtbot):
    model = RulesModel()
    for kind in ("lag", "drop", "duplicate"):
        model.add(kind)
    data = QMimeData()
    data.setData(ROW_MIME, b"2")
    # Dropped on the first row: the dragged rule goes before it.
    model.dropMimeData(data, Qt.DropAction.MoveAction, 0, 0, QModelIndex())
    assert [model.rule(r)["kind"] for r in range(3)] == ["duplicate", "lag", "drop"]
    data.setData(ROW_MIME, b"0")
    model.dropMimeData(data, Qt.DropAction.MoveAction, -1, -1, QModelIndex())
    assert [model.rule(r)["kind"] for r in range(3)] == ["lag", "drop", "duplicate"]
    version = model.version
    assert not model.apply_stats({"rules": [{"kind": "lag"}] * 3, "rules_version": version - 1})


def test_rules_come_back_switched_off_with_their_parameters_after_a_restart(qtbot):
    from PySide6.QtCore import QSettings

    from divertgui.app import Workbench
    from divertgui.models.rules_model import ENABLED
    from divertgui.views.capture_options import CaptureOptions
    from divertgui.views.rules_panel import SETTINGS_RULES

    first = Workbench(CaptureOptions(source="demo", rate=400.0))
    qtbot.addWidget(first.window)
    first.window.show()
    first.window.rules_dock.raise_()
    panel = first.window.rules_panel
    assert panel.load_profile("preset: clumsy-defaults")
    lag = [panel.model.rule(row)["kind"] for row in range(panel.model.rowCount())].index("lag")
    panel.select(lag)
    click_box(qtbot, panel.editor.enabled)
    panel.editor.fields["inbound_ms"].setValue(100.0)
    panel.model.set_value(lag + 1, "enabled", True)
    unfinished = add_from_menu(panel, "Payload find/replace")
    assert panel.model.error(unfinished), "a find/replace rule needs something to find"
    rules = panel.model.to_dicts(ids=True)
    assert rules[lag]["enabled"] and rules[lag]["inbound_ms"] == 100.0
    assert len({rule["id"] for rule in rules}) == len(rules)
    assert first.close()

    assert json.loads(QSettings().value(SETTINGS_RULES))[lag]["inbound_ms"] == 100.0
    second = Workbench(CaptureOptions(source="demo", rate=400.0))
    qtbot.addWidget(second.window)
    panel = second.window.rules_panel
    posted: list[tuple[str, dict]] = []
    send = panel.post

    def recorded(kind, **fields):
        posted.append((kind, fields))
        send(kind, **fields)

    # Replaced before the event loop runs, so the restored rules' first post is recorded too.
    panel.post = recorded
    try:
        assert panel.model.to_dicts(ids=True) == [dict(rule, enabled=False) for rule in rules], \
            "the same rules, ids and values, every one switched off"
        assert all(panel.model.index(row, ENABLED).data(Qt.ItemDataRole.CheckStateRole) == Qt.CheckState.Unchecked
                   for row in range(panel.model.rowCount()))
        panel.select(lag)
        assert not panel.editor.enabled.isChecked() and panel.editor.fields["inbound_ms"].value() == 100.0
        assert panel.model.error(unfinished) and not panel.model.error(lag)
        assert panel.profiles.currentText() == "preset: clumsy-defaults"
        restored = "Restored 9 rules from the previous run (profile preset: clumsy-defaults), all switched off"
        assert panel.status.text().startswith(restored)
        qtbot.waitUntil(lambda: panel.status.text().startswith("Not applied: rule 9"), timeout=5000)
        assert restored in panel.status.text(), "applying the restored rules still says what came back"
        # Invalid rules are kept back from the session until corrected; nothing captures by itself.
        panel.model.remove(unfinished)
        qtbot.waitUntil(lambda: [r["id"] for r in second.bridge.session.rules] == [r["id"] for r in rules[:-1]],
                        timeout=5000)
        assert not second.window.running and second.bridge.session.backend is None
        assert panel.status.text() == "Applied: 0 of 8 rules enabled"
        start_demo(qtbot, second)
        sent = [rule for kind, fields in posted if kind == "set_rules" for rule in fields["rules"]]
        assert sent and not any(rule["enabled"] for rule in sent), "no rule reaches the session switched on"
        assert not any(rule.enabled for rule in second.bridge.session.pipeline.rules)
        assert len(second.window.delays) == 0, "no packet was lagged"
        assert all(panel.model.counters(row)["matched"] == 0 for row in range(panel.model.rowCount()))
    finally:
        assert second.close()


def test_unreadable_saved_rules_are_reported_not_applied(qtbot):
    from PySide6.QtCore import QSettings

    from divertgui.models.rules_model import RulesModel
    from divertgui.views.rules_panel import SETTINGS_RULES, RulesPanel

    QSettings().setValue(SETTINGS_RULES, '[{"kind": "lag"}, {"kind": "warp"}]')
    posted = []
    panel = RulesPanel(RulesModel(), lambda kind, **fields: posted.append(kind))
    qtbot.addWidget(panel)
    assert panel.model.rowCount() == 0
    assert "not restored" in panel.status.text() and "rule 2" in panel.status.text()
    assert SETTINGS_RULES in panel.status.text()


def test_an_edit_while_capturing_keeps_the_counters_counting(qtbot, workbench):
    window = workbench.window
    panel = window.rules_panel
    row = add_from_menu(panel, "Lag")
    panel.model.set_value(row, "inbound_ms", 400.0)
    panel.model.set_value(row, "outbound_ms", 400.0)
    panel.model.set_value(row, "enabled", True)
    start_demo(qtbot, workbench)
    qtbot.waitUntil(lambda: panel.model.counters(row)["delayed"] >= 20, timeout=10000)
    lag = workbench.bridge.session.pipeline.rules[0]
    assert lag.id == panel.model.rule(row)["id"]
    panel.editor.fields["inbound_ms"].setValue(30.0)
    before = panel.model.counters(row)["matched"]
    assert before >= 20, "an edit does not zero the counters shown"
    qtbot.waitUntil(lambda: workbench.bridge.session.rules[0]["inbound_ms"] == 30.0, timeout=5000)
    assert workbench.bridge.session.pipeline.rules[0].counters["matched"] >= before
    qtbot.waitUntil(lambda: panel.model.counters(row)["matched"] >= before + 20, timeout=10000)


def test_a_rule_that_cannot_match_the_captured_packets_says_so_and_counts_0_of_n(qtbot, workbench):
    window = workbench.window
    panel = window.rules_panel
    row = add_from_menu(panel, "Lag")
    panel.editor.filter.set_text("icmp")
    panel.model.set_value(row, "enabled", True)
    qtbot.waitUntil(lambda: session_kinds(workbench) == [("lag", True)], timeout=5000)
    window.capture_filter.set_text("tcp.DstPort == 443")
    start_demo(qtbot, workbench, rows=20)
    assert "Warning: rule 1 (Lag on `icmp`) cannot match anything the capture filter " \
           "`tcp.DstPort == 443` takes" in panel.status.text()
    matched = panel.model.index(row, COLUMNS.index("Matched"))
    qtbot.waitUntil(lambda: matched.data() == f"0 of {window.session_stats.get('packets', 0):,} captured"
                    and panel.model.captured > 0, timeout=5000)
    assert "cannot match" in matched.data(Qt.ItemDataRole.ToolTipRole)

    window.stop_capture()
    qtbot.waitUntil(lambda: not window.running, timeout=5000)
    window.capture_filter.set_text("tcp or icmp")
    window.start_capture()
    qtbot.waitUntil(lambda: window.running, timeout=5000)
    assert "Warning" not in panel.status.text()
    assert panel.model.unreachable() == []
