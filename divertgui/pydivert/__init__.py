"""pydivert 4's API on the divertgui engine: `import divertgui.pydivert as pydivert`.

A pydivert program runs with that one change: the same classes, constants,
submodules (consts, packet, packet.builder, util, ...) and behaviour, on
the engine's netfilter backend. docs/porting.md lists what differs.
"""

from divertgui.pydivert.consts import CalcChecksumsOption, Direction, Flag, Layer, Param, Protocol, RecvFlag
from divertgui.pydivert.core import Divert
from divertgui.pydivert.ebpf import EBPFDivert
from divertgui.pydivert.packet import Packet
from divertgui.pydivert.packet.builder import PacketBuilder
from divertgui.pydivert.windivert import WinDivert

# The pydivert release whose API this package follows.
__version__ = "4.0.1"

__all__ = [
    "Divert", "WinDivert", "EBPFDivert", "Packet", "PacketBuilder", "Layer", "Flag", "Param",
    "CalcChecksumsOption", "Direction", "Protocol", "RecvFlag",
]
