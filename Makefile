# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120

.PHONY: install demo test bench clean

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

# pytest exits 5 when it collected no tests; that must fail, never pass as green.
test: $(STAMP)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf lake sample_catalog
