# Two commands matter: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo study test bench lint install browser clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip >/dev/null
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# Debian's chromium for the report's browser test; skipped quietly when apt is unavailable.
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 || \
	  echo "note: chromium not installed; the report browser test will be skipped"; }

demo: $(STAMP)
	$(PY) -m landscape.study --out runs/demo

# The longer studies behind the demo's claims (resumable): AdvLC against similar methods, and attribution.
study: $(STAMP)
	$(PY) -m landscape.study --study methods --out runs/methods
	$(PY) -m landscape.study --study attribution --out runs/attribution

test: $(STAMP) browser
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/bench_measures.py
	$(PY) benchmarks/bench_units.py
	$(PY) benchmarks/bench_hs.py --digits-batch 100 --cifar-batch 4
	$(PY) benchmarks/bench_slices.py
	$(PY) benchmarks/bench_trajectory.py
	$(PY) benchmarks/bench_trajectory_gpu.py
	$(PY) benchmarks/bench_stream.py
	$(PY) benchmarks/bench_cli.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis runs
