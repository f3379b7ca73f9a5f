"""The side panels (Intercept, Rules, Processes) are usable at the width the side area gets in
the smallest first window (SIDE_RANGE's low end), on a 1366x768 laptop screen and on a
1920x1080 desktop screen: no panel scrolls sideways, no button is cut short or clipped, no
control is squeezed below its minimum or covers another, the held list shows its rows and the
editor gets the larger share. The Events and Charts panels below the list fit the laptop's and
the desktop's width."""

from __future__ import annotations

import contextlib

import pytest
from PySide6.QtCore import QRect
from pytestqt.exceptions import TimeoutError as QtBotTimeout
from PySide6.QtWidgets import (QAbstractButton, QAbstractScrollArea, QAbstractSpinBox, QComboBox, QLabel,
                               QLineEdit, QWidget)

from divertgui.engine.address import Address
from divertgui.engine.processes import Process
from divertgui.engine.store import CaptureStore, Verdict
from divertgui.views import window_settings
from divertgui.views.hex_view import BYTES_PER_LINE
from divertgui.views.intercept_panel import HELD_ROWS_SHOWN
from divertgui.views.processes_view import ProcessesView
from divertgui.views.window_layout import SIDE_RANGE, SMALLEST, first_window_size, scrolled, side_panel_width
from tests.gui.conftest import start_demo
from tests.gui.test_intercept import hold
from tests.unit.test_processes import udp4

LAPTOP = first_window_size(QRect(0, 0, 1366, 768))
DESKTOP = first_window_size(QRect(0, 0, 1920, 1080))
# What the checks look at: the controls, and the lists and editors between them.
CONTROLS = (QAbstractButton, QComboBox, QAbstractSpinBox, QLineEdit, QLabel, QAbstractScrollArea)


def inside_inner_scroll(widget: QWidget, panel: QWidget) -> bool:
    """True for a widget within a scrolling part of the panel (a form, a list): it may scroll out of view."""
    parent = widget.parentWidget()
    while parent is not None and parent is not panel:
        if isinstance(parent, QAbstractScrollArea):
            return True
        parent = parent.parentWidget()
    return False


def scroll_area_of(panel: QWidget) -> QAbstractScrollArea:
    area = panel.parentWidget()
    while area is not None and not isinstance(area, QAbstractScrollArea):
        area = area.parentWidget()
    assert area is not None, "the panel is not in its scroll area"
    return area


def cramped(panel: QWidget) -> list[str]:
    """What in the shown panel is cut short, squeezed or out of view (an empty list when nothing)."""
    problems = []
    area = scroll_area_of(panel)
    if area.horizontalScrollBar().isVisible():
        problems.append(f"the panel scrolls sideways: {panel.minimumSizeHint().width()} px wide in "
                        f"{area.viewport().width()} px")
    shown: list[QWidget] = []
    for widget in panel.findChildren(QWidget):
        if not isinstance(widget, CONTROLS) or not widget.isVisible() or widget.objectName().startswith("qt_") \
                or inside_inner_scroll(widget, panel):
            continue
        shown.append(widget)
        name = f"{type(widget).__name__} {widget.objectName() or getattr(widget, 'text', lambda: '')()!r}"
        # A button shows its whole text only at its size hint; other controls need their minimum
        # (a list or an editor the minimum it was given: Qt's hint for them is a placeholder).
        if isinstance(widget, QAbstractButton):
            needed = widget.sizeHint()
        elif isinstance(widget, QAbstractScrollArea):
            needed = widget.minimumSize()
        else:
            needed = widget.minimumSizeHint()
        if widget.width() < needed.width() or widget.height() < needed.height():
            problems.append(f"{name} is {widget.size().toTuple()}, needs {needed.toTuple()}")
        seen = widget.visibleRegion().boundingRect()
        if seen.size() != widget.size():
            problems.append(f"{name} is clipped to {seen.size().toTuple()} of {widget.size().toTuple()}")
    places = [(widget, QRect(widget.mapTo(panel, widget.rect().topLeft()), widget.size())) for widget in shown]
    for number, (widget, place) in enumerate(places):
        for other, other_place in places[number + 1:]:
            if place.intersects(other_place) and not widget.isAncestorOf(other) and not other.isAncestorOf(widget):
                problems.append(f"{type(widget).__name__} {widget.objectName()!r} overlaps "
                                f"{type(other).__name__} {other.objectName()!r}")
    return problems


def settle(qtbot, condition) -> None:
    """Layouts settle over a few turns of the event loop, more of them on a busy machine: waits up
    to 3 s for `condition()`, and the assertion that follows says what is wrong if it never holds."""
    with contextlib.suppress(QtBotTimeout):
        qtbot.waitUntil(lambda: bool(condition()), timeout=3000)


def sized(qtbot, window, size):
    window.resize(size)
    window_settings.apply_default_layout(window)
    qtbot.waitUntil(lambda: abs(window.intercept_dock.width() - side_panel_width(window.width())) <= 12)
    return window


@pytest.fixture(params=[LAPTOP, DESKTOP], ids=["laptop-1366x768", "desktop-1920x1080"])
def window(request, qtbot, workbench):
    return sized(qtbot, workbench.window, request.param)


@pytest.fixture(params=[SMALLEST, LAPTOP, DESKTOP], ids=["smallest", "laptop-1366x768", "desktop-1920x1080"])
def side_window(request, qtbot, workbench):
    """Also the smallest first window, whose side area is SIDE_RANGE's low end itself."""
    window = sized(qtbot, workbench.window, request.param)
    if request.param == SMALLEST:
        assert window.intercept_dock.width() <= SIDE_RANGE[0] + 8
    return window


def test_the_intercept_panel_with_a_held_packet_in_the_editor_fits(qtbot, workbench, side_window):
    start_demo(qtbot, workbench)
    panel = hold(qtbot, workbench, "tcp.DstPort == 80 and tcp.PayloadLength > 0")
    qtbot.waitUntil(lambda: ("payload", "bytes") in panel.editor.form.edits)
    settle(qtbot, lambda: cramped(panel) == [])
    assert cramped(panel) == []
    table = panel.table
    assert table.viewport().height() >= HELD_ROWS_SHOWN * table.rowHeight(0), "the held list shows too few rows"
    assert panel.editor.tabs.height() > table.height(), "the editor gets less room than the held list"

    panel.editor.tabs.setCurrentIndex(1)
    hex_editor = panel.editor.hex
    qtbot.waitUntil(hex_editor.isVisible)
    settle(qtbot, lambda: cramped(panel) == [] and not hex_editor.horizontalScrollBar().isVisible())
    assert cramped(panel) == []
    assert not hex_editor.horizontalScrollBar().isVisible(), "the hex lines are wider than the editor"
    pane = panel.editor.hex_pane
    assert hex_editor.bytes_per_line == (BYTES_PER_LINE if pane.width() >= pane.width_for(BYTES_PER_LINE)
                                         else BYTES_PER_LINE // 2)
    first_line = hex_editor.toPlainText().split("\n")[0]
    assert len(first_line.split()) == hex_editor.bytes_per_line
    panel.forward_all()


def test_a_long_holding_status_and_an_edit_error_push_the_controls_aside_rather_than_cover_them(
        qtbot, workbench, side_window):
    start_demo(qtbot, workbench)
    panel = hold(qtbot, workbench, "tcp.DstPort == 80 and tcp.PayloadLength > 0")
    panel.filter.set_text("tcp.DstPort == 80 and tcp.PayloadLength > 0 and ip.DstAddr == 198.51.100.10 "
                          "and not tcp.Syn")
    panel.filter.submit()
    panel.set_held_processes([1234, 5678])
    port = panel.editor.form.field("tcp", "dst_port")
    port.setText("not a port at all")
    panel.forward()
    qtbot.waitUntil(panel.editor.error.isVisible)
    # The split dragged as far up as it goes: the queue's part at its least.
    panel.split.setSizes([0, panel.split.height()])
    qtbot.wait(100)
    assert panel.status.height() >= panel.status.heightForWidth(panel.status.width())
    assert panel.editor.error.height() >= panel.editor.error.heightForWidth(panel.editor.error.width())
    assert [problem for problem in cramped(panel) if "overlaps" in problem] == []
    panel.forward_all()


def test_the_rules_panel_with_a_rule_selected_fits(qtbot, side_window):
    window = side_window
    window.rules_dock.show()
    window.rules_dock.raise_()
    panel = window.rules_panel
    panel.profiles.setCurrentText("preset: mobile-3g")
    panel.load_selected_profile()
    panel.select(2)
    qtbot.waitUntil(lambda: panel.editor.fields != {})
    settle(qtbot, lambda: cramped(panel) == [])
    assert cramped(panel) == []
    # A placeholder is cut to the rule filter's one line rather than wrapped onto a hidden second one.
    edit = panel.editor.filter.edit
    assert edit.fontMetrics().horizontalAdvance(edit.placeholderText()) <= edit.viewport().width()


def test_the_processes_panel_shows_the_flows_and_bytes_of_each_process(qtbot, side_window):
    window = side_window
    store = window.store
    for number, name in enumerate(("firefox-esr", "curl", "nc")):
        process = store.processes.intern(Process(4000 + number, name, "ann"))
        raws = [udp4("10.0.0.1", 1000 + number, "10.0.0.2", 53, b"q" * 1200)] * 200
        store.append_batch(raws, [Address(outbound=True)] * len(raws), Verdict.PASSED, 0, process)
    window.processes.count = lambda: len(store)
    window.processes_dock.show()
    window.processes_dock.raise_()
    view = window.processes
    qtbot.waitUntil(lambda: view.model.rowCount() == 3, timeout=5000)
    settle(qtbot, lambda: cramped(view) == [])
    assert cramped(view) == []
    table, header = view.table, view.table.horizontalHeader()
    for column in range(view.model.columnCount()):
        if not table.isColumnHidden(column):
            assert header.sectionSize(column) >= table.sizeHintForColumn(column), \
                f"{view.model.COLUMNS[column]} cuts its values short"
    # The process, its flows and its bytes out are in view without scrolling sideways.
    for title in ("Process", "Flows", "Bytes Out"):
        column = view.model.COLUMNS.index(title)
        assert header.sectionViewportPosition(column) + header.sectionSize(column) <= table.viewport().width(), \
            f"{title} is out of view"


def test_a_processes_column_the_user_widened_stays_wide(qtbot):
    store = CaptureStore()
    curl = store.processes.intern(Process(10, "curl", "ann"))
    store.append_batch([udp4("10.0.0.1", 1000, "10.0.0.2", 53, b"q")], [Address(outbound=True)],
                       Verdict.PASSED, 0, curl)
    view = ProcessesView(store, lambda: len(store))
    area = scrolled(view)
    qtbot.addWidget(area)
    area.show()
    qtbot.waitExposed(area)
    header = view.table.horizontalHeader()
    flows = view.model.COLUMNS.index("Flows")
    header.resizeSection(flows, 300)
    view.refresh()
    assert header.sectionSize(flows) == 300


def test_the_events_panel_fits_where_it_opens(qtbot, window):
    window.events_dock.show()
    view = window.events_view
    qtbot.waitUntil(lambda: view.isVisible() and not view.visibleRegion().isEmpty())
    settle(qtbot, lambda: cramped(view) == [])
    assert cramped(view) == []
    cgroup = view.cgroup
    assert cgroup.fontMetrics().horizontalAdvance(cgroup.placeholderText()) <= cgroup.contentsRect().width() - 8, \
        "the cgroup field cuts its placeholder short"


def test_the_hex_lines_follow_the_pane_width_until_the_user_types_in_them(qtbot):
    from divertgui.views.hex_view import HexEditor, HexPane
    editor = HexEditor()
    pane = HexPane(editor)
    qtbot.addWidget(pane)
    pane.resize(pane.width_for(BYTES_PER_LINE), 300)
    pane.show()
    qtbot.waitExposed(pane)
    editor.set_data(bytes(range(20)))

    def line_lengths() -> list[int]:
        return [len(line.split()) for line in editor.toPlainText().split("\n")]

    def ascii_fits(per_line: int) -> bool:
        return pane.ascii.width() == pane._ascii_width(per_line)

    assert line_lengths() == [16, 4] and ascii_fits(16)
    pane.resize(pane.width_for(BYTES_PER_LINE) - 1, 300)
    qtbot.waitUntil(lambda: line_lengths() == [8, 8, 4])
    assert ascii_fits(8) and not editor.horizontalScrollBar().isVisible()
    pane.resize(pane.width_for(BYTES_PER_LINE), 300)
    qtbot.waitUntil(lambda: line_lengths() == [16, 4])

    editor.setPlainText(editor.toPlainText().replace("00", "ff", 1))
    typed = editor.toPlainText()
    pane.resize(pane.width_for(BYTES_PER_LINE) - 1, 300)
    qtbot.waitUntil(lambda: editor.bytes_per_line == 8)
    assert editor.toPlainText() == typed, "the user's lines were laid out again under them"
    assert ascii_fits(16), "the ASCII column no longer fits the user's lines"
    assert editor.data() == b"\xff" + bytes(range(1, 20))
    editor.set_data(bytes(range(20)))
    assert line_lengths() == [8, 8, 4] and ascii_fits(8)


def test_the_charts_fit_the_width_below_the_list_with_their_titles_whole(qtbot, window):
    charts = window.charts
    scroll = scroll_area_of(charts)
    for several_hosts in (False, True):
        if several_hosts:
            charts.show_hosts()
        qtbot.wait(100)
        assert not scroll.horizontalScrollBar().isVisible(), \
            f"the charts scroll sideways: {charts.minimumSizeHint().width()} px in {scroll.viewport().width()} px"
        for control in (charts.split_units_label, charts.split_units, charts.window_spin, charts.follow_button,
                        charts.pause_box):
            assert control.width() >= control.sizeHint().width(), f"{control} is cut short"
            assert control.visibleRegion().boundingRect().width() == control.width(), f"{control} is clipped"
        for plot in (charts.packets_plot, charts.bytes_plot, charts.direction_plot, charts.process_chart.plot):
            title = plot.getPlotItem().titleLabel.item
            assert title.boundingRect().width() <= plot.width(), f"{title.toPlainText()!r} is cut short"


def test_the_split_keeps_where_the_user_dragged_it(qtbot):
    from PySide6.QtCore import QPoint, Qt
    from PySide6.QtTest import QTest
    from divertgui.views.intercept_panel import SharedSplitter
    split = SharedSplitter((2, 3))
    split.addWidget(QWidget())
    split.addWidget(QWidget())
    qtbot.addWidget(split)
    split.resize(200, 500)
    split.show()
    qtbot.waitExposed(split)
    top, bottom = split.sizes()
    assert abs(top * 3 - bottom * 2) <= 5, "the shares are not 2:3"
    split.resize(200, 800)
    qtbot.waitUntil(lambda: sum(split.sizes()) > 700)
    top, bottom = split.sizes()
    assert abs(top * 3 - bottom * 2) <= 5, "the shares are not kept as the split grows"

    handle = split.handle(1)
    middle = handle.rect().center()
    QTest.mousePress(handle, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, middle)
    QTest.mouseMove(handle, middle + QPoint(0, 100))
    QTest.mouseRelease(handle, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, middle + QPoint(0, 100))
    dragged = split.sizes()
    assert dragged[0] >= top + 90
    split.resize(200, 600)
    qtbot.waitUntil(lambda: sum(split.sizes()) < 600)
    share = split.sizes()[0] / sum(split.sizes())
    assert abs(share - dragged[0] / sum(dragged)) < 0.02, "the user's split was shared out again"
