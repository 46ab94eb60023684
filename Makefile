# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120
# Idle OpenMP threads sleep instead of spinning (spinning made 2-core training 5x slower under load).
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install browser demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Builds the sample catalog (fetched once into .cache/) and runs the nightly pipeline on it
# with embedded defaults: the lake is ./lake, Prefect runs in ephemeral mode.
demo: $(STAMP)
	$(BIN)/catalog-enhance sample-catalog --out sample_catalog
	$(BIN)/catalog-enhance nightly --feed sample_catalog/feed.csv

# The report and Prefect UI tests drive a real headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "the browser tests need Chromium: sudo apt-get install -y chromium"; exit 1; fi; }

# The type check runs first (config: pyproject.toml [tool.mypy]); any error fails the target.
# pytest exits 5 when it collected no tests; that must fail, never pass as green.
test: $(STAMP) browser
	$(BIN)/python -m mypy
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# Benchmarks (issue 6): quality, throughput, incremental cost, S3; writes bench/RESULTS.md and
# bench/*.png, ~25 min on 2 cores. Not tests: nothing here asserts on time.
bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf lake sample_catalog
