# Bollard developer targets. `make up` and `make test` are the README's quick start.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: up down install test test-libvirt test-ui test-web screenshots lint typecheck chaos bench \
	bench-quick clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# noVNC (the web console's graphical console) comes from npm, else Debian's package; without
# either the rest works and the script says so in one line (it never fails the install).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@scripts/web/install-novnc.sh $(VENV)
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	@scripts/web/install-novnc.sh $(VENV)
	touch $@ $(STAMP)

install: $(STAMP)

## Start a local cluster (server + 3 sim agents, HTTPS/WSS) in the background; `make down`
## stops it. More options for `bollard up`: `make up ARGS="--port 9000 --data-dir /tmp/x"`.
up: $(STAMP)
	$(BIN)/bollard up --nodes 3 --detach $(ARGS)

down: $(STAMP)
	$(BIN)/bollard down

## The whole test suite (PostgreSQL tests run when 127.0.0.1:5432 answers, else are skipped).
## It includes the libvirt tests: scripts/libvirt/install.sh runs first, before pytest
## collects the tests, so libvirt-python is importable by all of them
## (BOLLARD_TEST_NO_INSTALL=1 skips that); where libvirt cannot run (not root, no
## namespaces, packages not installable) they are skipped with the reason.
## The web console's browser tests (tests/ui, marker `ui`) run too: scripts/browser/install.sh
## installs Debian's Chromium and Playwright first (same rules: BOLLARD_TEST_NO_INSTALL=1 skips
## it; where they are missing the tests are skipped with the reason); and so do the console's
## front-end lint and unit tests (`make test-web`).
## pytest runs twice: first the tests not marked `serial` (tests/unit, tests/api and
## tests/contract, where each test owns its temp dir, ports and databases) on 2 pytest-xdist
## workers; then, one at a time, the `serial` ones (tests/conftest.py marks them: everything
## else, e.g. e2e, libvirt, ui, and any test using libvirt hosts or a browser). The second
## runs even if the first failed; either failing fails `make test`.
test: $(TEST_STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	scripts/browser/test-web.sh
	@if [ -z "$$BOLLARD_TEST_NO_INSTALL" ]; then scripts/libvirt/install.sh $(VENV) || \
		echo "test: libvirt/QEMU not installed; the libvirt tests will be skipped" >&2; fi
	@if [ -z "$$BOLLARD_TEST_NO_INSTALL" ]; then scripts/browser/install.sh $(VENV) || \
		echo "test: Chromium/Playwright not installed; the browser tests will be skipped" >&2; fi
	status=0; \
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not chaos and not serial" \
		-n 2 --dist worksteal || status=1; \
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not chaos and serial" || status=1; \
	exit $$status

## Only the tests marked `libvirt` (anywhere under tests/): real libvirtd daemons and QEMU
## guests on this machine. Installs their packages first (root); if that fails the tests
## are skipped, with the reason printed.
test-libvirt: $(TEST_STAMP)
	@scripts/libvirt/install.sh $(VENV) || echo "test-libvirt: install failed; the libvirt tests will be skipped" >&2
	$(BIN)/python -m pytest -q -p no:cacheprovider -rs -m libvirt tests

## Only the web console's browser tests (marker `ui`: tests/ui, and the noVNC test on real
## libvirt hosts in tests/libvirt/test_libvirt_vnc.py): Debian's Chromium driven by
## Playwright against a real `bollard up` cluster. Installs Chromium and Playwright first (root
## for apt); if that fails the tests are skipped, with the reason printed.
test-ui: $(TEST_STAMP)
	@scripts/browser/install.sh $(VENV) || echo "test-ui: install failed; the browser tests will be skipped" >&2
	@scripts/libvirt/install.sh $(VENV) || echo "test-ui: libvirt not installed; the noVNC test will be skipped" >&2
	$(BIN)/python -m pytest -q -p no:cacheprovider -rs -m ui tests/ui tests/libvirt/test_libvirt_vnc.py

## The web console's front-end checks: ESLint (pinned in web/package-lock.json) on
## src/bollard/server/web/static, then `node --test web/test/`. Needs Node.js and npm; what
## cannot run without them is skipped with the reason.
test-web:
	scripts/browser/test-web.sh

## The README's screenshots (docs/img/*.png), taken by the browser tests.
screenshots: $(TEST_STAMP)
	@scripts/browser/install.sh $(VENV) || echo "screenshots: install failed; the browser tests will be skipped" >&2
	@scripts/libvirt/install.sh $(VENV) || echo "screenshots: libvirt not installed; no console.png" >&2
	BOLLARD_SCREENSHOTS=docs/img $(BIN)/python -m pytest -q -p no:cacheprovider -rs -m ui tests/ui tests/libvirt/test_libvirt_vnc.py

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/lint-imports --no-cache

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

## The long chaos run (200 random operations while agents and the server are SIGKILLed).
## BOLLARD_CHAOS_SEED=N replays a run; BOLLARD_CHAOS_OPS=N changes its length.
chaos: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m chaos tests/chaos

## Benchmarks, one after the other: each prints JSON and writes bench/results/<name>.json
## (see bench/README.md and docs/performance.md); stdout holds nothing else. Options for
## every one: `make bench BENCH_ARGS=--quick`. `make bench-quick`: the three scale
## benchmarks (scale, throughput, latency) with --quick, in under 5 minutes. `storage` runs on
## real libvirt hosts: it installs libvirt/QEMU first as `make test-libvirt` does
## (scripts/libvirt/install.sh), and where they cannot run its JSON says `skipped` and why.
## `api_ha` (several servers) needs PostgreSQL at 127.0.0.1:5432 (or BENCH_ARGS=--db URL);
## where none answers its JSON says `skipped` and why. `cli_startup`: how long `bollard`
## takes to start for a simple read (issue 24; a 1-node `bollard up` cluster of its own).
BENCHMARKS := scale throughput latency failover reconcile storage cells api_ha cli_startup
SCALE_BENCHMARKS := scale throughput latency
bench:
	@$(MAKE) --no-print-directory $(STAMP) >&2
	@status=0; for b in $(BENCHMARKS); do $(BIN)/python bench/$$b.py $(BENCH_ARGS) || status=1; done; exit $$status

bench-quick:
	@$(MAKE) --no-print-directory $(STAMP) >&2
	@status=0; for b in $(SCALE_BENCHMARKS); do $(BIN)/python bench/$$b.py --quick || status=1; done; exit $$status

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
