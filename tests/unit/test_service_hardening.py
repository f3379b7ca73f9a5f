"""When the capture service counts its environment as clean, and what it runs to get there."""

import sys
import types

from divertgui.service.hardening import MINIMAL_ENVIRONMENT, clean_command, is_clean

ISOLATED, NOT_ISOLATED = types.SimpleNamespace(isolated=1), types.SimpleNamespace(isolated=0)
BOOTLOADER = {"_PYI_ARCHIVE_FILE": "/opt/divertgui/divert", "_PYI_PARENT_PROCESS_LEVEL": "-1",
              "LD_LIBRARY_PATH": "/opt/divertgui/_internal",
              "QT_PLUGIN_PATH": "/opt/divertgui/_internal/PySide6/Qt/plugins",
              "QML2_IMPORT_PATH": "/opt/divertgui/_internal/PySide6/qml:/opt/divertgui/_internal/PySide6/Qt/qml"}


def test_clean_means_the_minimal_environment_in_isolated_mode():
    assert is_clean(MINIMAL_ENVIRONMENT, ISOLATED, frozen=False)
    assert not is_clean(MINIMAL_ENVIRONMENT, NOT_ISOLATED, frozen=False)
    assert not is_clean({**MINIMAL_ENVIRONMENT, "PYTHONPATH": "/evil"}, ISOLATED, frozen=False)
    assert not is_clean({**MINIMAL_ENVIRONMENT, "QT_PLUGIN_PATH": "/evil"}, ISOLATED, frozen=False)


def test_the_bundles_own_bootloader_variables_do_not_make_it_start_again():
    assert is_clean({**MINIMAL_ENVIRONMENT, **BOOTLOADER}, NOT_ISOLATED, frozen=True,
                    bundle_libraries="/opt/divertgui/_internal")
    for key, value in (("LD_LIBRARY_PATH", "/evil"), ("QT_PLUGIN_PATH", "/opt/divertgui/_internal/x:/evil"),
                       ("QT_PLUGIN_PATH", "/opt/divertgui/_internal-evil"), ("PYTHONPATH", "/evil")):
        assert not is_clean({**MINIMAL_ENVIRONMENT, **BOOTLOADER, key: value}, NOT_ISOLATED,
                            frozen=True, bundle_libraries="/opt/divertgui/_internal"), (key, value)
    assert not is_clean({**BOOTLOADER, **MINIMAL_ENVIRONMENT, "LD_LIBRARY_PATH": "/opt/divertgui/_internal"},
                        NOT_ISOLATED, frozen=False)


def test_it_starts_again_as_this_interpreter_in_isolated_mode_or_as_the_bundle():
    assert clean_command(["serve"], frozen=False) == [sys.executable, "-I", "-m", "divertgui.cli", "serve"]
    assert clean_command(["serve", "--listen", "/run/x"], frozen=True) == [sys.executable, "serve", "--listen",
                                                                          "/run/x"]
