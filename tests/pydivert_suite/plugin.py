"""A pytest plugin for running pydivert's own test suite against divertgui.pydivert.

Loaded with `-p tests.pydivert_suite.plugin` (test_pydivert_suite.py does),
before the test modules import anything: `import pydivert` and every
`pydivert.<submodule>` then load divertgui.pydivert's modules. pydivert's
generated-input test gets no per-example deadline, since the machine may be
busy, and saves no example database.
"""

import importlib
import pkgutil
import sys

from hypothesis import settings

import divertgui.pydivert


def _substitute() -> None:
    sys.modules["pydivert"] = divertgui.pydivert
    prefix = divertgui.pydivert.__name__ + "."
    for module in pkgutil.walk_packages(divertgui.pydivert.__path__, prefix):
        sys.modules["pydivert." + module.name[len(prefix):]] = importlib.import_module(module.name)


_substitute()
settings.register_profile("pydivert-suite", deadline=None, database=None)
settings.load_profile("pydivert-suite")
