# Two commands do everything on a fresh machine:
#   make run    create .venv if missing, install, start the app
#   make test   the same set-up plus test tools and a browser, lint, then the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8501

.PHONY: run test bench clean

run: $(VENV)/.runtime
	@# The backbone catalog the pages read, computed once per version (half a minute), here
	@# rather than while the first visitor waits; a no-op once it exists.
	$(BIN)/python -m core backbones --json > /dev/null
	$(BIN)/python -m streamlit run streamlit_app.py --server.port $(PORT)

test: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	scripts/ensure-browser.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.dev
	$(BIN)/python bench/bench_precision.py
	$(BIN)/python bench/bench_estimate.py

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.runtime: requirements.txt | $(VENV)/bin/python
	$(BIN)/python -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt requirements-ray.txt | $(VENV)/bin/python
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

clean:
	rm -rf $(VENV) .pytest_cache
