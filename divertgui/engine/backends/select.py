"""The backend a Divert handle uses when none is given: the one native to this operating system."""

from __future__ import annotations

import sys

from divertgui.engine.address import Layer
from divertgui.engine.backends.base import Backend
from divertgui.engine.errors import UnsupportedPlatformError


def default_backend(layer: Layer = Layer.NETWORK) -> Backend:
    """On Linux: NfqueueBackend at the network layers, the eBPF SocketBackend and
    FlowBackend at the SOCKET and FLOW layers, ReflectBackend at the REFLECT layer;
    PydivertBackend (the WinDivert driver) on Windows."""
    if sys.platform.startswith("linux") and layer == Layer.SOCKET:
        from divertgui.engine.backends.socket_layer import SocketBackend
        return SocketBackend()
    if sys.platform.startswith("linux") and layer == Layer.REFLECT:
        from divertgui.engine.backends.reflect_layer import ReflectBackend
        return ReflectBackend()
    if sys.platform.startswith("linux") and layer == Layer.FLOW:
        from divertgui.engine.backends.socket_layer import FlowBackend
        return FlowBackend()
    if sys.platform.startswith("linux"):
        from divertgui.engine.backends.nfqueue import NfqueueBackend
        from divertgui.engine.filter.kernel import kernel_test
        return NfqueueBackend(kernel_prefilter=kernel_test)
    if sys.platform == "win32":
        from divertgui.engine.backends.pydivert import PydivertBackend
        return PydivertBackend()
    raise UnsupportedPlatformError(
        f"no diversion backend for {sys.platform}: divertgui diverts on Linux (netfilter) "
        f"and on Windows (WinDivert, through pydivert)")
