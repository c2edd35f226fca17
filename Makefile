# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.persemo-installed
# torch is pinned exactly and installed in the same pip command as everything else, so pip never
# resolves an unpinned torch (which would pull a multi-GB CUDA build on a CPU machine).
TORCH ?= torch==2.13.0
EXTRAS ?= serve,export,opensmile,encoder,scale,dev
DEMO_DIR ?= demo_data
DEMO_RUN ?= runs/demo

.PHONY: install system-deps demo test test-fast bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)" -e ".[$(EXTRAS)]"
	@touch $(STAMP)

install: $(STAMP)

system-deps:
	@bash scripts/system-deps.sh

demo: install
	@bash scripts/system-deps.sh espeak-ng
	$(PY) -m persemo synth-demo --out $(DEMO_DIR)
	$(PY) -m persemo train --corpus shemo --data $(DEMO_DIR) --out $(DEMO_RUN) --config configs/demo.yaml
	$(PY) -m persemo predict --model $(DEMO_RUN) $$(ls $(DEMO_DIR)/female/*.wav | head -1)

test: install
	@bash scripts/system-deps.sh espeak-ng chromium
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) -m benchmarks all

clean:
	rm -rf $(DEMO_DIR) runs .pytest_cache
