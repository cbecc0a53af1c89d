# `make run` starts the gateway; `make test` runs every check; `make test-quick` runs the unit
# tests without any service (README, "Tests"). All install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-quick lint services bench

$(BIN)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# The Node.js SDKs the protocol tests drive; without Node.js those tests skip and say why.
NODE_SDKS := tests/protocols/node
$(NODE_SDKS)/node_modules/.installed: $(NODE_SDKS)/package.json $(NODE_SDKS)/package-lock.json
	if command -v npm >/dev/null; then \
		npm ci --prefix $(NODE_SDKS) --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "npm not found: the Node.js SDK tests will be skipped"; fi

run: $(BIN)/.installed
	$(BIN)/python serve.py

services:
	bash .ci/services

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(BIN)/.installed $(NODE_SDKS)/node_modules/.installed services lint
	$(BIN)/python -m pytest

# SQLite and fakes: no PostgreSQL, RabbitMQ, Kafka or root (tests/settings_quick.py).
test-quick: $(BIN)/.installed
	$(BIN)/python -m pytest --ds=tests.settings_quick -m "not integration and not faults" $(PYTEST_ARGS)

# Benchmarks run in a virtualenv of their own (bench/requirements.txt: gunicorn, gevent, ...),
# so the comparison servers never land in the service's .venv. docs/BENCHMARKS.md explains.
BENCH_BIN := bench/.venv/bin
$(BENCH_BIN)/.installed: requirements.txt bench/requirements.txt bench/requirements-uwsgi.txt
	test -x $(BENCH_BIN)/python || $(PYTHON) -m venv bench/.venv
	$(BENCH_BIN)/python -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	$(BENCH_BIN)/python -m pip install --quiet --disable-pip-version-check \
		-r bench/requirements-uwsgi.txt || echo "bench: uWSGI did not build; it is skipped"
	touch $@

bench: $(BENCH_BIN)/.installed services
	$(BENCH_BIN)/python -m bench.run $(BENCH_ARGS)
