"""The part of pydivert's WinDivert binding that is not the DLL: WINDIVERT_ADDRESS."""

from divertgui.pydivert.windivert_dll.structs import WinDivertAddress

__all__ = ["WinDivertAddress"]
