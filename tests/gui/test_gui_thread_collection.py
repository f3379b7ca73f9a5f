"""Qt objects left in reference cycles are destroyed in the GUI thread, never on a
session or reader thread, where Qt's destructor and the GUI thread deadlock."""

import gc
import threading
import weakref

from PySide6.QtWidgets import QWidget


def allocate_past_the_collectors_threshold(held: list) -> None:
    """What a busy session or reader thread does: hold enough new objects to start a collection."""
    held.extend([] for _ in range(2 * gc.get_threshold()[0]))


def test_a_window_left_in_a_cycle_is_destroyed_in_the_gui_thread_while_another_thread_allocates(workbench, qtbot):
    destroyed_on = []
    widget = QWidget()
    widget.itself = widget
    weakref.finalize(widget, lambda: destroyed_on.append(threading.current_thread().name))
    del widget
    held = []
    busy = threading.Thread(target=allocate_past_the_collectors_threshold, args=(held,), name="busy")
    busy.start()
    busy.join()
    qtbot.waitUntil(lambda: bool(destroyed_on), timeout=2000)
    assert destroyed_on == [threading.main_thread().name]


def test_closing_the_last_workbench_gives_collection_back_to_python(qtbot):
    from divertgui.app import Workbench
    assert gc.isenabled()
    first, second = Workbench(), Workbench()
    for bench in (first, second):
        qtbot.addWidget(bench.window)
    assert first.close()
    assert not gc.isenabled(), "the second workbench is still open"
    assert second.close()
    assert gc.isenabled()
