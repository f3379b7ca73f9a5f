# `make run` sets everything up and starts the workbench; `make test` sets
# everything up and runs the test suite. Both are safe to repeat.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup run demo test screenshots bench bundle clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml packaging/system-deps.sh
	sh packaging/system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# PyInstaller, for the bundle and the test that builds it; only ever into .venv/.
$(VENV)/.installed-package: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[package]'
	touch $@

run: setup
	$(BIN)/divertgui

demo: setup
	$(BIN)/divertgui --demo

test: setup $(VENV)/.installed-package
	$(BIN)/python -m pytest -q

screenshots: setup
	DIVERTGUI_SCREENSHOTS=docs $(BIN)/python -m pytest -q tests/gui/test_docs_screenshots.py tests/gui/test_live_events.py

bench: setup
	$(BIN)/pip install -q -e '.[bench]'
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

bundle: $(VENV)/.installed-package
	PYTHON=$(BIN)/python sh packaging/build.sh

clean:
	rm -rf $(VENV) build dist *.egg-info
