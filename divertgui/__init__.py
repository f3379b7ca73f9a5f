"""divertgui: capture, sniff, drop, modify and re-inject packets chosen by a WinDivert filter."""

__version__ = "0.1.0"
