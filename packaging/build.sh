#!/bin/sh
# Build the one-folder bundle dist/divertgui/ (executables divertgui and divert).
#   packaging/build.sh [--dist DIR] [--work DIR]
# PYTHON names the interpreter whose environment has the project's dependencies
# and PyInstaller (the `package` extra); `make bundle` passes the project's
# .venv. The script installs nothing.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
dist="$root/dist"
work="$root/build/pyinstaller"
python=${PYTHON:?"set PYTHON to the interpreter of the environment that has the project and PyInstaller (make bundle does)"}

while [ $# -gt 0 ]; do
    case "$1" in
        --dist) dist=$2; shift 2 ;;
        --work) work=$2; shift 2 ;;
        *) echo "build.sh: unknown argument $1 (use --dist DIR, --work DIR)" >&2; exit 2 ;;
    esac
done

"$python" -c "import PyInstaller" 2>/dev/null || {
    echo "build.sh: PyInstaller does not import with $python: install the project's package extra with '$python -m pip install -e \"$root[package]\"' (make bundle does)" >&2
    exit 1
}
# The package is taken from this checkout; its dependencies from the running Python.
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH
"$python" -c "import divertgui.app" || {
    echo "build.sh: divertgui.app does not import with $python: install the dependencies with 'pip install -e $root'" >&2
    exit 1
}

"$python" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath "$dist" --workpath "$work" "$here/pyinstaller.spec"

for program in divertgui divert; do
    [ -x "$dist/divertgui/$program" ] || [ -f "$dist/divertgui/$program.exe" ] || {
        echo "build.sh: $dist/divertgui/$program was not built" >&2
        exit 1
    }
done
echo "built $dist/divertgui"
