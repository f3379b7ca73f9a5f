"""Every engine and service module imports on its own, first, with no other
divertgui module loaded: an import cycle shows up only when the modules of the
cycle are entered in the wrong order."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import divertgui

PACKAGE = pathlib.Path(divertgui.__file__).parent
MODULES = sorted(
    ".".join(("divertgui", *path.relative_to(PACKAGE).with_suffix("").parts))
    for directory in ("engine", "engine/backends", "engine/filter", "engine/rules", "service")
    for path in (PACKAGE / directory).glob("*.py") if path.name != "__init__.py")

# One interpreter for all (a fresh one per module costs seconds): each module is
# imported after every divertgui module is forgotten, as if it were the first.
IMPORT_EACH_FIRST = """
import importlib, json, sys, traceback
failures = {}
for module in json.loads(sys.argv[1]):
    for name in [name for name in sys.modules if name == "divertgui" or name.startswith("divertgui.")]:
        del sys.modules[name]
    try:
        importlib.import_module(module)
    except Exception:
        failures[module] = traceback.format_exc(limit=-3)
print(json.dumps(failures))
"""


def test_the_list_covers_the_backends():
    assert {"divertgui.engine.backends.nfqueue", "divertgui.engine.backends.pydivert",
            "divertgui.engine.backends.select", "divertgui.engine.handle", "divertgui.engine.errors"} <= set(MODULES)


def test_each_module_imports_first():
    result = subprocess.run([sys.executable, "-c", IMPORT_EACH_FIRST, json.dumps(MODULES)],
                            capture_output=True, text=True, timeout=120, check=True)
    failures = json.loads(result.stdout.splitlines()[-1])
    assert failures == {}, "\n".join(f"{module}:\n{trace}" for module, trace in failures.items())


def test_a_cycle_is_caught(tmp_path):
    for name, other in (("first", "second"), ("second", "first")):
        (tmp_path / f"{name}.py").write_text(f"from {other} import VALUE\nVALUE = 1\n")
    result = subprocess.run([sys.executable, "-c", IMPORT_EACH_FIRST, json.dumps(["first"])], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, check=True)
    assert "ImportError" in json.loads(result.stdout.splitlines()[-1])["first"]
