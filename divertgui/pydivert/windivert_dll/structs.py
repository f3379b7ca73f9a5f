"""WINDIVERT_ADDRESS (windivert.h, WinDivert 2.2) as a ctypes structure, byte for byte."""

from __future__ import annotations

import ctypes


class _Endpoint(ctypes.Structure):
    """WINDIVERT_DATA_FLOW and WINDIVERT_DATA_SOCKET; addresses are UINT32[4], low word first."""

    _fields_ = [
        ("EndpointId", ctypes.c_uint64),
        ("ParentEndpointId", ctypes.c_uint64),
        ("ProcessId", ctypes.c_uint32),
        ("LocalAddr", ctypes.c_uint32 * 4),
        ("RemoteAddr", ctypes.c_uint32 * 4),
        ("LocalPort", ctypes.c_uint16),
        ("RemotePort", ctypes.c_uint16),
        ("Protocol", ctypes.c_uint8),
    ]


class WinDivertAddress(ctypes.Structure):
    class _Union(ctypes.Union):
        class _Network(ctypes.Structure):
            _fields_ = [("IfIdx", ctypes.c_uint32), ("SubIfIdx", ctypes.c_uint32)]

        class _Flow(_Endpoint):
            pass

        class _Socket(_Endpoint):
            pass

        class _Reflect(ctypes.Structure):
            _fields_ = [
                ("Timestamp", ctypes.c_int64),
                ("ProcessId", ctypes.c_uint32),
                ("Layer", ctypes.c_uint32),
                ("Flags", ctypes.c_uint64),
                ("Priority", ctypes.c_int16),
            ]

        _fields_ = [
            ("Network", _Network),
            ("Flow", _Flow),
            ("Socket", _Socket),
            ("Reflect", _Reflect),
            ("Reserved3", ctypes.c_uint8 * 64),
        ]

    _anonymous_ = ("u",)
    _fields_ = [
        ("Timestamp", ctypes.c_int64),
        ("Layer", ctypes.c_uint32, 8),
        ("Event", ctypes.c_uint32, 8),
        ("Sniffed", ctypes.c_uint32, 1),
        ("Outbound", ctypes.c_uint32, 1),
        ("Loopback", ctypes.c_uint32, 1),
        ("Impostor", ctypes.c_uint32, 1),
        ("IPv6", ctypes.c_uint32, 1),
        ("IPChecksum", ctypes.c_uint32, 1),
        ("TCPChecksum", ctypes.c_uint32, 1),
        ("UDPChecksum", ctypes.c_uint32, 1),
        ("Reserved1", ctypes.c_uint32, 8),
        ("Reserved2", ctypes.c_uint32),
        ("u", _Union),
    ]


assert ctypes.sizeof(WinDivertAddress) == 80
