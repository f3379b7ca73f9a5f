"""packaging/build.sh builds the one-folder bundle, and the bundle runs headless:
the GUI's self-test, `divert doctor` reporting what the source tree reports, and
worker processes, which are forked from the bundle's process, never started again."""

import os
import pathlib
import signal
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXE = ".exe" if sys.platform == "win32" else ""


def _path_with_a_python3_that_cannot_build(directory: pathlib.Path) -> str:
    """A PATH whose first `python3`, `python` and `pip` fail, as a fresh machine's
    system interpreter without the project's dependencies would: the build must
    take the interpreter it is given, never one from PATH."""
    directory.mkdir()
    for name in ("python3", "python", "pip", "pip3"):
        fake = directory / name
        fake.write_text("#!/bin/sh\necho \"$0 is not the project's interpreter\" >&2\nexit 97\n")
        fake.chmod(0o755)
    return f"{directory}{os.pathsep}{os.environ['PATH']}"


def _build(work: pathlib.Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(ROOT / "packaging" / "build.sh"), "--dist", str(work / "dist"),
                           "--work", str(work / "build")],
                          capture_output=True, text=True, timeout=540, cwd=work, env=env)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> pathlib.Path:
    if sys.platform == "win32":
        pytest.skip("build.sh is the Linux build; Windows builds run pyinstaller on the spec directly")
    work = tmp_path_factory.mktemp("bundle")
    path = _path_with_a_python3_that_cannot_build(work / "system-bin")
    process = _build(work, **dict(os.environ, PATH=path, PYTHON=sys.executable))
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    assert "is not the project's interpreter" not in process.stderr
    return work / "dist" / "divertgui"


def test_the_build_refuses_to_guess_an_interpreter(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    env["PATH"] = _path_with_a_python3_that_cannot_build(tmp_path / "system-bin")
    process = _build(tmp_path, **env)
    assert process.returncode != 0
    assert "set PYTHON" in process.stderr
    assert "is not the project's interpreter" not in process.stderr
    assert not (tmp_path / "dist").exists()


def test_the_build_names_the_missing_package_extra_and_installs_nothing(tmp_path):
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    process = _build(tmp_path, **dict(os.environ, PYTHON=str(bare / "bin" / "python")))
    assert process.returncode == 1
    assert "PyInstaller does not import" in process.stderr and "[package]" in process.stderr
    assert not list((bare / "lib").glob("python*/site-packages/PyInstaller*"))


def _headless_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["QT_QPA_PLATFORM"] = "offscreen"
    return env


def test_the_bundle_holds_both_programs_qt_plugins_and_resources(bundle):
    internal = bundle / "_internal"
    assert os.access(bundle / f"divertgui{EXE}", os.X_OK)
    assert os.access(bundle / f"divert{EXE}", os.X_OK)
    plugins = {p.name for p in internal.rglob("plugins/platforms/*")}
    assert {"libqoffscreen.so", "libqxcb.so"} <= plugins, plugins
    assert (internal / "resources" / "icons" / "divertgui.svg").is_file()
    assert (internal / "resources" / "icons" / "divertgui-256.png").is_file()
    assert (internal / "pydivert" / "bpf" / "libebpfdivert.so").is_file()
    # Modules only ever imported by name at run time are in the archives too.
    archives = (bundle / f"divertgui{EXE}").read_bytes() + (bundle / f"divert{EXE}").read_bytes()
    for module in ("divertgui.engine.backends.pydivert", "divertgui.engine.backends.select",
                   "divertgui.engine.backends.replay", "divertgui.cli"):
        assert module.encode() in archives, module


def test_the_gui_passes_its_self_test_headless(bundle, tmp_path):
    env = _headless_env()
    # A home of its own: the self-test must not read or write the user's settings.
    env["HOME"] = env["XDG_CONFIG_HOME"] = str(tmp_path)
    process = subprocess.run([str(bundle / f"divertgui{EXE}"), "--self-test"], capture_output=True, text=True,
                             timeout=180, env=env, cwd=tmp_path)
    assert process.returncode == 0, process.stdout + process.stderr
    assert "self-test passed" in process.stdout
    assert "Traceback" not in process.stderr


def _statuses(output: str) -> list[str]:
    return [line.split()[0] for line in output.splitlines() if line and not line[0].isspace()]


def test_doctor_runs_from_the_bundle_and_agrees_with_the_source_tree(bundle, tmp_path):
    env = _headless_env()
    bundled = subprocess.run([str(bundle / f"divert{EXE}"), "doctor"], capture_output=True, text=True,
                             timeout=120, env=env, cwd=tmp_path)
    source = subprocess.run([sys.executable, "-m", "divertgui.cli", "doctor"], capture_output=True, text=True,
                            timeout=120, env=dict(env, PYTHONPATH=str(ROOT)), cwd=tmp_path)
    assert "Traceback" not in bundled.stderr, bundled.stderr
    assert bundled.stdout.strip(), bundled.stderr
    assert bundled.returncode == source.returncode, (bundled.stdout, source.stdout)
    assert _statuses(bundled.stdout) == _statuses(source.stdout), (bundled.stdout, source.stdout)


def test_the_bundled_capture_service_ignores_python_and_qt_variables(bundle, tmp_path, monkeypatch):
    """What attack (e) did to the window, tried on the capture service: it never runs the code offered."""
    from divertgui.engine.store import CaptureStore
    from divertgui.service.client import ServiceClient
    from divertgui.service.hardening import MINIMAL_ENVIRONMENT, is_clean
    from tests.integration.conftest import wait_until
    marker = tmp_path / "ran"
    (tmp_path / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("PYTHONSTARTUP", str(tmp_path / "sitecustomize.py"))
    monkeypatch.setenv("QT_QPA_PLATFORM_PLUGIN_PATH", str(tmp_path))
    client = ServiceClient("local", CaptureStore(), lambda event: None, command=[str(bundle / "divert"), "serve"])
    client.start()
    try:
        assert wait_until(lambda: client.hello, 30), client.stderr_text()
        with open(f"/proc/{client.hello['pid']}/environ", "rb") as f:
            environ = dict(item.decode().split("=", 1) for item in f.read().split(b"\0") if item)
    finally:
        client.close()
    assert not marker.exists()
    # The minimal environment, plus what the bundle's bootloader adds when it starts itself again.
    assert is_clean(environ, frozen=True, bundle_libraries=str(bundle / "_internal")), environ
    assert {key: environ[key] for key in MINIMAL_ENVIRONMENT} == MINIMAL_ENVIRONMENT


@pytest.mark.netns
def test_the_bundled_divert_spreads_packets_over_worker_processes(bundle, netns, tmp_path):
    """Its workers are forked from the running bundle: they run the pool's code, not the CLI again."""
    import socket
    passing = netns.popen([str(bundle / f"divert{EXE}"), "passthru", "udp.DstPort == 40399", "--workers", "2",
                           "--duration", "20"], env=_headless_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    first = passing.stdout.readline()
    assert "2 worker processes" in first, first + passing.stdout.read()
    with netns.entered():
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.bind(("0.0.0.0", 40399))
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.settimeout(10)
    for k in range(8):
        sender.sendto(b"datagram %d" % k, (f"127.0.0.{k + 1}", 40399))
    got = sorted(receiver.recv(100) for _ in range(8))
    passing.send_signal(signal.SIGINT)
    output = first + passing.communicate(timeout=60)[0]
    assert got == [b"datagram %d" % k for k in range(8)]
    assert "diverted=8 sent=8" in output and "workers_restarted=0" in output, output
    assert "Traceback" not in output and "invalid choice" not in output, output
