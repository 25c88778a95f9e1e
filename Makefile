# Two commands for a fresh machine (see README.md): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-slow

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	HF_HUB_OFFLINE=1 $(PY) -m dva.demo

# The default suite (under 10 minutes on 2 cores); CI then also runs the slow end-to-end tests.
test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not slow" --durations=10

test-slow: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m slow --durations=10
