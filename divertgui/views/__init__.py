"""Qt widgets of the workbench; they show and command, the engine decides."""

from divertgui.views.qt_workarounds import keep_singletons_alive

keep_singletons_alive()
