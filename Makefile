# The two commands a new user types: `make run` and `make test`. Each creates
# .venv on first use and installs tierscope into it (again when pyproject.toml
# changes), so a fresh clone needs nothing but Python 3.11+ and make.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test bench bench-agent bench-demo bench-alerting bench-first-run lint check soak soak-long soak-t23 reliability security clean dashboards fuzz

$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

## run: the demo estate (tierscope demo): collector + embedded PostgreSQL on
## http://127.0.0.1:4318, a CRM and an ERP under simulated users; Ctrl-C stops it
## (its browser users need Debian's chromium: installed here when missing and
## make runs as root, as the browser tests do; without it the demo runs without them)
run: $(INSTALLED)
	@$(BIN)/python -m tierscope.testing.chromium >/dev/null || true
	$(BIN)/tierscope demo

## test: the whole test suite (what CI runs)
test: $(INSTALLED)
	$(BIN)/python -m pytest

## bench: the ingest, processing, baseline and agent benchmarks (see docs/benchmarks.md)
bench: $(INSTALLED)
	$(BIN)/python bench/ingest.py; ingest=$$?; $(BIN)/python bench/processing.py; processing=$$?; \
	$(BIN)/python bench/baselines.py; baselines=$$?; $(BIN)/python bench/agent.py; \
	exit $$((ingest || processing || baselines || $$?))

## dashboards: regenerate the committed Grafana dashboard JSON (dashboards/generated/)
dashboards: $(INSTALLED)
	$(BIN)/python -c "from tierscope.dashboards.provision import write_generated; write_generated()"

## bench-agent: only the agent benchmark
bench-agent: $(INSTALLED)
	$(BIN)/python bench/agent.py

## bench-alerting: evaluation cost for 1,000 transactions, then per fault of the
## demo estate the time to the notification and whether tier and component were right
bench-alerting: $(INSTALLED)
	$(BIN)/python bench/alerting.py --days 42 --cycles 5

## bench-first-run: a new user's first `make run` from a fresh clone, timed (install, URLs, transactions, Ctrl-C)
bench-first-run: $(INSTALLED)
	$(BIN)/python bench/first_run.py

## bench-demo: the demo estate's own CPU, memory and spans/s at its default load
bench-demo: $(INSTALLED)
	$(BIN)/python bench/demo.py

## fuzz: long fuzzing runs (see docs/reliability.md): atheris on each decoder and
## scrubber for FUZZ_SECONDS (default 300), schemathesis with 300 examples per API operation
FUZZ_SECONDS ?= 300
fuzz: $(INSTALLED)
	TIERSCOPE_FUZZ_SECONDS=$(FUZZ_SECONDS) TIERSCOPE_SCHEMATHESIS_EXAMPLES=300 \
	$(BIN)/python -m pytest -o timeout=0 tests/fuzz tests/security/test_openapi.py

## reliability: the fault and overload tests (tests/reliability), figures into docs/reliability.md
reliability: $(INSTALLED)
	$(BIN)/python -m tierscope.testing.reliability

## security: the attack tests T-09 to T-22 (status contract, limits, tenants, roles,
## RUM, XSS, scrubbing, alerting faults, SSRF, signatures, fuzzing), their figures
## into docs/reliability.md
security: $(INSTALLED)
	$(BIN)/python -m tierscope.testing.reliability --security

## soak: the long variants of the fault tests, then the 2-hour soak T-23
soak: soak-long soak-t23

## soak-long: the long variants of the fault tests (30 s faults, more kills, longer steps)
soak-long: $(INSTALLED)
	$(BIN)/python -m tierscope.testing.reliability --soak

## soak-t23: the 2-hour soak T-23 alone (TIERSCOPE_SOAK_SECONDS to shorten it)
soak-t23: $(INSTALLED)
	$(BIN)/python -m tierscope.testing.reliability --t23

## lint: ruff
lint: $(INSTALLED)
	$(BIN)/ruff check .

check: lint test

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info test-artifacts
