"""Windows: the security descriptor of the named pipe the elevated capture
service connects to, admitting the user who started the window and SYSTEM
and no one else (Windows' default would let other local users open it for
reading). It is written in SDDL and converted by
ConvertStringSecurityDescriptorToSecurityDescriptorW.
"""

from __future__ import annotations

import contextlib
import ctypes
import re
from typing import Iterator

# D: the DACL; P: protected, so that nothing is inherited into it; each ACE
# (A;;GA;;;WHO) allows WHO every access; an account no ACE names is denied.
# SY is LocalSystem.
_SDDL_TEMPLATE = "D:P(A;;GA;;;SY)(A;;GA;;;{sid})"
_SID = re.compile(r"S-1(-\d{1,10}){1,15}")
SDDL_REVISION_1 = 1
TOKEN_QUERY = 0x0008
TOKEN_USER_CLASS = 1          # TOKEN_INFORMATION_CLASS.TokenUser


def pipe_sddl(user_sid: str) -> str:
    """The descriptor, in SDDL, of a pipe that `user_sid` (text, S-1-...) and SYSTEM alone may open."""
    if not _SID.fullmatch(user_sid):
        raise ValueError(f"not a security identifier: {user_sid!r}")
    return _SDDL_TEMPLATE.format(sid=user_sid)


class SecurityAttributes(ctypes.Structure):
    """SECURITY_ATTRIBUTES."""

    _fields_ = [("nLength", ctypes.c_uint32), ("lpSecurityDescriptor", ctypes.c_void_p),
                ("bInheritHandle", ctypes.c_int)]


class SidAndAttributes(ctypes.Structure):
    """SID_AND_ATTRIBUTES, which is all a TOKEN_USER holds."""

    _fields_ = [("Sid", ctypes.c_void_p), ("Attributes", ctypes.c_uint32)]


def security_attributes(descriptor: int) -> SecurityAttributes:
    """SECURITY_ATTRIBUTES for a self-relative descriptor at address `descriptor`; its handle is not inherited."""
    attributes = SecurityAttributes()
    attributes.nLength = ctypes.sizeof(SecurityAttributes)
    attributes.lpSecurityDescriptor = descriptor
    attributes.bInheritHandle = 0
    return attributes


def current_user_sid() -> str:
    """The text form of the SID of the user this process runs as (its token's TokenUser)."""
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)
    kernel32.GetCurrentProcess.restype = ctypes.c_void_p
    token = ctypes.c_void_p()
    if not advapi32.OpenProcessToken(ctypes.c_void_p(kernel32.GetCurrentProcess()), TOKEN_QUERY,
                                     ctypes.byref(token)):
        raise ctypes.WinError(ctypes.get_last_error())
    try:
        needed = ctypes.c_uint32()
        advapi32.GetTokenInformation(token, TOKEN_USER_CLASS, None, 0, ctypes.byref(needed))
        buffer = ctypes.create_string_buffer(max(needed.value, ctypes.sizeof(SidAndAttributes)))
        if not advapi32.GetTokenInformation(token, TOKEN_USER_CLASS, buffer, ctypes.sizeof(buffer),
                                            ctypes.byref(needed)):
            raise ctypes.WinError(ctypes.get_last_error())
        user = SidAndAttributes.from_buffer(buffer)
        text = ctypes.c_wchar_p()
        if not advapi32.ConvertSidToStringSidW(ctypes.c_void_p(user.Sid), ctypes.byref(text)):
            raise ctypes.WinError(ctypes.get_last_error())
        try:
            return text.value
        finally:
            kernel32.LocalFree(text)
    finally:
        kernel32.CloseHandle(token)


@contextlib.contextmanager
def owner_only_attributes() -> Iterator[SecurityAttributes]:
    """SECURITY_ATTRIBUTES admitting this process's user and SYSTEM, valid inside the block."""
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)
    descriptor = ctypes.c_void_p()
    if not advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW(
            pipe_sddl(current_user_sid()), SDDL_REVISION_1, ctypes.byref(descriptor), None):
        raise ctypes.WinError(ctypes.get_last_error())
    try:
        yield security_attributes(descriptor.value)
    finally:
        kernel32.LocalFree(descriptor)
