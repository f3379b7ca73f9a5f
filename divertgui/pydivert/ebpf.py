"""pydivert's EBPFDivert (its Linux handle): the same handle as Divert here."""

from divertgui.pydivert.core import SHUTDOWN_BOTH, SHUTDOWN_RECV, SHUTDOWN_SEND
from divertgui.pydivert.core import Divert as EBPFDivert

__all__ = ["EBPFDivert", "SHUTDOWN_RECV", "SHUTDOWN_SEND", "SHUTDOWN_BOTH"]
