"""Analyze > Follow TCP/UDP Stream and Statistics > Conversations/Endpoints for the main
window: dialogs over the capture's flows whose filters land in the display filter bar."""

from __future__ import annotations

import numpy as np

from divertgui.views.conversations_dialog import ConversationsDialog
from divertgui.views.follow_stream_dialog import FollowStreamDialog


class StreamActions:
    def __init__(self, window):
        self.window = window
        self.follow_tcp_action = self.follow_udp_action = None

    def fill_menus(self, analyze_menu, statistics_menu, add_action) -> None:
        self.follow_tcp_action = add_action(analyze_menu, "Follow &TCP Stream", lambda: self.follow_stream("TCP"),
                                            "Ctrl+Alt+Shift+T")
        self.follow_udp_action = add_action(analyze_menu, "Follow &UDP Stream", lambda: self.follow_stream("UDP"),
                                            "Ctrl+Alt+Shift+U")
        add_action(statistics_menu, "&Conversations",
                   lambda: self.conversations_dialog(ConversationsDialog.CONVERSATIONS))
        add_action(statistics_menu, "&Endpoints", lambda: self.conversations_dialog(ConversationsDialog.ENDPOINTS))

    def follow_stream(self, protocol: str | None = None) -> FollowStreamDialog | None:
        """Opens the stream of the current packet; `protocol` ("TCP"/"UDP") when the user asked for one."""
        from divertgui.engine.errors import StreamError
        from divertgui.engine.streams import follow_stream
        window = self.window
        current = window.table.currentIndex()
        if not current.isValid() or window.table_model.stale():
            window.statusBar().showMessage("Select a TCP or UDP packet to follow its stream", 5000)
            return None
        try:
            stream = follow_stream(window.store, window.table_model.store_row(current.row()))
        except StreamError as exc:
            window.statusBar().showMessage(str(exc), 8000)
            return None
        if protocol is not None and stream.protocol_name != protocol:
            window.statusBar().showMessage(f"The selected packet is {stream.protocol_name}, not {protocol}", 8000)
            return None
        dialog = FollowStreamDialog(stream, window)
        dialog.filter_requested.connect(self.apply_filter_text)
        dialog.show()
        return dialog

    def conversations_dialog(self, tab: int = ConversationsDialog.CONVERSATIONS) -> ConversationsDialog:
        window = self.window

        def rows(displayed_only: bool):
            return window.table_model.displayed_rows() if displayed_only else np.arange(window.count)

        dialog = ConversationsDialog(window.store, rows, window)
        dialog.filter_requested.connect(self.apply_filter_text)
        dialog.show_tab(tab)
        dialog.show()
        return dialog

    def apply_filter_text(self, text: str) -> None:
        """Puts `text` in the display filter bar and applies it."""
        self.window.display_filter.set_text(text)
        self.window.display_filter.submit()
