"""Keeps None, True and False alive under PySide6 builds that drop references to them.

PySide6 6.12 on CPython 3.11 releases one reference to None for every call
of a method returning void or an empty QVariant (and to True/False for some
bool returns); CPython 3.12+ makes these objects immortal, 3.11 does not, so
a busy window reaches "Fatal Python error: none_dealloc" within minutes.
Giving them an out-of-reach reference count makes them immortal here too.
"""

from __future__ import annotations

import ctypes
import sys

_OUT_OF_REACH = 1 << 60
_applied = False


def keep_singletons_alive() -> None:
    global _applied
    if _applied or sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return
    for singleton in (None, True, False):
        # ob_refcnt is the first field of every object in release builds.
        ctypes.c_ssize_t.from_address(id(singleton)).value += _OUT_OF_REACH
    _applied = True
