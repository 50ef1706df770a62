# Strata developer commands. Two do all the set-up on a fresh machine: `make dev` and `make test`.
SHELL := /bin/bash
UV ?= uv
export STRATA_ROOT ?= $(CURDIR)/.strata
export DAGSTER_HOME ?= $(STRATA_ROOT)/dagster_home
# Demo data for `make dev` / `make demo`: DAYS of history up to today, at a tenth of full scale
# (~100k telemetry rows a day).
DAYS ?= 30
SCALE ?= 0.1
SEED ?= 42
# `make dev`: where the UI listens, and the living demo (LIVE=0 turns it off). The demo window reaches
# HORIZON_DAYS past today and is filled up to LAG_HOURS ago; `python -m demo live` then moves the world
# on at LIVE_SPEED simulated seconds per second until it has caught up with the clock, then with it.
HOST ?= 127.0.0.1
PORT ?= 3000
LIVE ?= 1
LIVE_SPEED ?= 60
HORIZON_DAYS ?= 30
# The demo weather API (`python -m demo weather-api`) that `make dev` starts for bronze/weather_forecasts.
WEATHER_PORT ?= 8765
LAG_HOURS ?= 12
PYTEST_ARGS ?=
# `make test` runs the suite in this many worker processes (pytest-xdist, one test file per worker at a
# time): most of its time is spent waiting on dbt, PostgreSQL and run subprocesses, so 2 workers on 2 cores
# finish well before one. PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 2
# The first partition is the first day of the demo data: DAYS before the day it was generated, kept in
# DEMO_START_FILE so that the partitions do not move under the data on the following days.
DEMO_START_FILE := $(STRATA_ROOT)/demo/start_date
DEMO_START = $(shell cat $(DEMO_START_FILE) 2>/dev/null || date -u -d "$(DAYS) days ago" +%F)
DEMO_TARGETS := dev demo demo-data $(STRATA_ROOT)/demo/ground_truth.json $(STRATA_ROOT)/demo/initial-load.done
$(DEMO_TARGETS): export STRATA_START_DATE ?= $(DEMO_START)

.PHONY: help env dev demo demo-data test test-fast test-week bench bench-backfill lint format manifest clean policy sbom

help:
	@echo "make dev     environment + demo data + dagster dev (UI on http://HOST:PORT, default 127.0.0.1:3000) + live demo"
	@echo "make demo    materialize the whole graph headless for the demo window and print a summary"
	@echo "make test    the test suite (make test-fast skips the slow scale tests)"
	@echo "make bench   benchmarks against plain-engine floors"
	@echo "make bench-backfill  the 181-day backfill at scale 0.1 against its floor, and load_hourly at 30/90/181 days"
	@echo "make lint    ruff check + format check"
	@echo "make policy  deployment policy over images/ and helm/ (digests, limits, non-root, no secrets)"
	@echo "make sbom    CycloneDX SBOM of the base image's Python packages, from uv.lock ($(SBOM))"

env:
	@command -v $(UV) >/dev/null || python3 -m pip install --quiet uv
	$(UV) sync --frozen --compile-bytecode

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

manifest: env
	cd dbt && $(UV) run dbt parse --quiet --profiles-dir . --target local

$(STRATA_ROOT)/demo/ground_truth.json:
	mkdir -p $(STRATA_ROOT)/demo && echo $(DEMO_START) > $(DEMO_START_FILE)
	$(UV) run python -m demo generate --start $(DEMO_START) --days $(DAYS) --horizon-days $(HORIZON_DAYS) \
		--lag-hours $(LAG_HOURS) --scale $(SCALE) --seed $(SEED)

demo-data: env $(STRATA_ROOT)/demo/ground_truth.json

# The demo weather API beside a headless backfill, which fetches the weather of the whole window first
# (stopped when the recipe ends; one already listening on WEATHER_PORT serves instead).
WITH_WEATHER_API = $(UV) run python -m demo weather-api --port $(WEATHER_PORT) & weather_pid=$$!; \
	trap "kill $$weather_pid 2>/dev/null" EXIT; \
	export STRATA_WEATHER_URL=$${STRATA_WEATHER_URL:-http://127.0.0.1:$(WEATHER_PORT)};

# The first `make dev` loads the demo window headless (few, large runs), so the UI opens on a fully
# materialized graph and the drop sensor finds every existing drop already in the ledger.
$(STRATA_ROOT)/demo/initial-load.done: | $(STRATA_ROOT)/demo/ground_truth.json
	@$(WITH_WEATHER_API) $(UV) run python -m jobs.backfill && touch $@ || echo "initial load failed: the runs are in the UI"

# The living demo and the demo weather API run beside `dagster dev` and stop with it.
dev: env $(DAGSTER_HOME)/dagster.yaml demo-data manifest $(STRATA_ROOT)/demo/initial-load.done
	@$(UV) run python -m demo weather-api --port $(WEATHER_PORT) & weather_pid=$$!; \
	trap "kill $$weather_pid 2>/dev/null" EXIT; \
	if [ "$(LIVE)" = 1 ]; then \
		$(UV) run python -m demo live --speed $(LIVE_SPEED) & live_pid=$$!; \
		trap "kill $$live_pid $$weather_pid 2>/dev/null" EXIT; \
	fi; \
	STRATA_WEATHER_URL=$${STRATA_WEATHER_URL:-http://127.0.0.1:$(WEATHER_PORT)} \
		$(UV) run dagster dev -w workspace.yaml -h $(HOST) -p $(PORT)

demo: env $(DAGSTER_HOME)/dagster.yaml demo-data manifest
	@$(WITH_WEATHER_API) $(UV) run python -m jobs.backfill

test: env manifest
	$(UV) run pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not week" $(PYTEST_ARGS)

test-fast: env manifest
	$(UV) run pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not slow and not week" $(PYTEST_ARGS)

# The simulated week: every schedule, sensor and automation condition evaluated hour by hour for 7 days.
test-week: env manifest
	$(UV) run pytest -m week $(PYTEST_ARGS)

bench: env manifest
	$(UV) run python -m tests.benchmarks

# The whole-graph backfill (`python -m jobs.backfill`) against its raw-engine floor, with peak memory and
# DAGSTER_HOME size, then `load_hourly` alone over each window of BENCH_SCALING_DAYS (time per hour).
# Hours of work at the defaults; e.g. `make bench-backfill BENCH_DAYS=3 BENCH_SCALE=0.01 BENCH_SCALING_DAYS=1,3`.
BENCH_DAYS ?= 181
BENCH_SCALE ?= 0.1
BENCH_SCALING_DAYS ?= 30,90,181
bench-backfill: env manifest
	$(UV) run python -m tests.benchmarks.bench_backfill --days $(BENCH_DAYS) --scale $(BENCH_SCALE) \
		--scaling-days $(BENCH_SCALING_DAYS)

lint: env
	$(UV) run ruff check .
	$(UV) run ruff format --check .

# Refuses :latest, tags without digests, missing limits, root containers and literal secrets in the
# Dockerfiles, Helm values and manifests (tests/deployment_policy.py). CI runs it before the tests.
policy: env
	$(UV) run python -m tests.deployment_policy

# The base image's Python packages are exactly `uv sync --frozen --no-dev` of uv.lock, so its SBOM is
# built from the same export (versions and hashes) and stored with the release next to the digest.
SBOM ?= dist/sbom/strata-base.cdx.json
sbom:
	mkdir -p $(dir $(SBOM))
	$(UV) export --frozen --no-dev --no-emit-project --format requirements-txt --output-file $(SBOM).requirements.txt --quiet
	$(UV) run --frozen cyclonedx-py requirements --output-format JSON --output-file $(SBOM) $(SBOM).requirements.txt
	rm -f $(SBOM).requirements.txt

format: env
	$(UV) run ruff check --fix .
	$(UV) run ruff format .

clean:
	rm -rf .strata dbt/target dbt/logs
