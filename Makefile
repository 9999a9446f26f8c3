# The commands a contributor needs. `make demo` and `make test` each set up everything they
# need on a fresh machine (a virtualenv, a Docker engine, the runtime image) and are idempotent.

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
ENGINE  := $(BIN)/engine
STAMP   := $(VENV)/.installed

.PHONY: setup docker image demo test test-unit test-docker lint protos protos-check bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

docker:
	bash scripts/ensure-docker.sh

image: setup docker
	$(ENGINE) image build

# The main example, end to end, on the Docker backend.
demo: image
	cd examples/fanout && ../../$(ENGINE) run app.py:orchestrator --backend docker \
		--input '"What made the 2008 financial crisis possible?"'

# Everything CI runs: generated code up to date, lint, and the whole suite with Docker tests.
test: image protos-check lint
	ENGINE_REQUIRE_DOCKER=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests

test-unit: setup
	$(BIN)/python -m pytest -q tests/unit

lint: setup
	$(BIN)/ruff check engine tests examples benchmarks
	$(BIN)/mypy engine

protos: setup
	PATH=$(BIN):$$PATH bash scripts/gen_protos.sh

protos-check: setup
	@PATH=$(BIN):$$PATH bash scripts/gen_protos.sh
	@git diff --quiet -- engine/wire/v1 || { echo "engine/wire/v1 is stale: run make protos and commit"; git --no-pager diff --stat -- engine/wire/v1; exit 1; }

bench: setup
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .engine
