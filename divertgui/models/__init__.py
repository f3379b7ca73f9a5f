"""Qt models over the engine's capture store and session events."""

from divertgui.views.qt_workarounds import keep_singletons_alive

keep_singletons_alive()
