"""pydivert's WinDivert: the same handle as Divert, on every platform the engine runs on."""

from divertgui.pydivert.core import Divert as WinDivert

__all__ = ["WinDivert"]
