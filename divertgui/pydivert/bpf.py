"""pydivert's handle on its native Linux helper library, `libebpfdivert` (None when it did not load).

Here the helpers that library provides (filter compilation and evaluation,
checksums) are the engine's, in Python, so `libebpfdivert` names the engine:
code that checks `libebpfdivert is not None` before calling
`Packet.matches()` finds it available. The library's C functions
(`ebpfdivert_*`) do not exist here.
"""

from divertgui import engine as libebpfdivert

__all__ = ["libebpfdivert"]
