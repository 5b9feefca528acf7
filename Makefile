# Fresh machine: `make demo` or `make test`. Both are idempotent: the virtual environment in .venv is created once,
# torch==2.13.0 is installed first and only if no torch is present (a bare `torch` requirement would pull a CUDA
# build), then the project with its extras.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[all,dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/tww demo

# pytest exits 5 when it collects no test: make treats that, like any non-zero exit, as a failure.
test: setup
	$(VENV)/bin/ruff check .
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
