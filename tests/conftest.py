"""Fixtures shared by every test layer.

- `state_dir`: a fresh state directory per test, exported as `ENGINE_STATE_DIR`, with
  `ENGINE_BACKEND=process` so that nothing needs Docker unless a test asks for it.
- `cli`: runs the real `engine` command line in a subprocess; returns `(code, stdout, stderr)`.
- `apps`: imports a module from `tests/integration/apps/` (the directory executors receive).
- `side_effects`: reads the lines that functions append to a file, to count executions.
- `wait_until`: polls a condition with a deadline (never a bare sleep).
- `show`: a run's details as `engine show RUN_ID --json` prints them, read in-process.
- `postgres_server`: one private PostgreSQL server for the session (tests/pglib.py); skipped when
  PostgreSQL 15 or psycopg is missing, failed instead when `ENGINE_REQUIRE_POSTGRES=1`
  (`postgres_bin`: the same check, for a test that runs servers of its own).
- `postgres_url`: a fresh, empty database on it for each test (dropped after), as a URL.

- `docker_client`: the Docker engine with the runtime image built, for the docker tests (only
  a test that asks for it skips without Docker, or fails under `ENGINE_REQUIRE_DOCKER=1`).

The warm pool is off (`ENGINE_WARM_EXECUTORS=0`) unless the environment says otherwise.
"""

from __future__ import annotations

import importlib
import itertools
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import pglib
import pytest
from llmlib import llm  # noqa: F401 - the local model server fixture (tests/llmlib.py), for the acceptance tests

REPO = Path(__file__).resolve().parent.parent
APPS_DIR = REPO / "tests" / "integration" / "apps"
EXAMPLES_DIR = REPO / "examples"


def pytest_configure(config: pytest.Config) -> None:
    # Also declared in pyproject.toml; repeated here so that the marker is known whichever
    # configuration file pytest picks up.
    config.addinivalue_line("markers", "docker: needs a running Docker engine and the runtime image")
    config.addinivalue_line("markers", "swarm: builds a 3-host Docker Swarm on this machine")
    config.addinivalue_line("markers", "postgres: needs PostgreSQL 15 (make postgres)")
    config.addinivalue_line("markers", "hosts: builds network-namespace test hosts on one bridge")
    # Many tests count a run's executors and containers; the warm pool's blank executors would
    # be counted with them. Its own tests (test_warm_pool.py) turn it on; set
    # ENGINE_WARM_EXECUTORS=2 to run the whole suite with it.
    os.environ.setdefault("ENGINE_WARM_EXECUTORS", "0")


@pytest.fixture
def examples_dir() -> Path:
    return EXAMPLES_DIR


class CLIResult(NamedTuple):
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A per-test state directory; the process backend. Executors inherit this environment."""
    path = tmp_path / "state"
    path.mkdir()
    monkeypatch.setenv("ENGINE_STATE_DIR", str(path))
    monkeypatch.setenv("ENGINE_BACKEND", "process")
    # Short leases: a test that kills an engine waits this long before another may take over.
    monkeypatch.setenv("ENGINE_LEASE_TTL", "3")
    return path


def run_cli(*args: str, cwd: Path | str | None = None, env: dict[str, str] | None = None,
            timeout: float = 120) -> CLIResult:
    """`engine ARGS...` as a real subprocess, with this interpreter."""
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
        timeout=timeout,
    )
    return CLIResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli(state_dir: Path) -> Callable[..., CLIResult]:
    """`cli("run", "app.py:main", "--json")` → CLIResult, against this test's state dir."""
    return run_cli


@pytest.fixture
def apps(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModuleType]:
    """`apps("app_graph")` imports tests/integration/apps/app_graph.py under its own name, which
    is the name executors import it by (they receive the whole apps directory)."""
    if str(APPS_DIR) not in sys.path:
        monkeypatch.syspath_prepend(str(APPS_DIR))

    def load(name: str) -> ModuleType:
        return importlib.import_module(name)

    return load


class SideEffects:
    """Lines functions appended to `path` (one per execution, by convention `tag|...`)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __str__(self) -> str:
        return str(self.path)

    def lines(self) -> list[str]:
        try:
            return [line for line in self.path.read_text().splitlines() if line]
        except FileNotFoundError:
            return []

    def tagged(self, tag: str) -> list[list[str]]:
        """Fields of every line whose first field is `tag`."""
        return [fields[1:] for fields in (line.split("|") for line in self.lines()) if fields[0] == tag]

    def count(self, tag: str, *fields: str) -> int:
        return sum(1 for f in self.tagged(tag) if tuple(f[: len(fields)]) == fields)


@pytest.fixture
def side_effects(tmp_path: Path) -> SideEffects:
    return SideEffects(tmp_path / "side-effects.log")


def poll(condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.02,
         what: str = "condition") -> Any:
    """Return `condition()`'s first truthy value; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def wait_until() -> Callable[..., Any]:
    return poll


@pytest.fixture
def show(state_dir: Path) -> Callable[[str], dict[str, Any]]:
    """`show(run_id)`: what `engine show RUN_ID --json` prints, read in this process."""

    def details(run_id: str) -> dict[str, Any]:
        from engine.cli import run_details
        from engine.store import open_store, store_url

        store = open_store(store_url(state_dir))
        try:
            return run_details(store, run_id)
        finally:
            store.close()

    return details


@pytest.fixture(scope="session")
def postgres_bin() -> Path:
    """PostgreSQL 15's binaries, for a test that runs servers of its own (`pglib.PostgresServer`):
    skips the test when they or psycopg are missing, or fails it with `ENGINE_REQUIRE_POSTGRES=1`."""
    reason = pglib.missing()
    if reason:
        if os.environ.get("ENGINE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"ENGINE_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    return pglib.PG_BIN


@pytest.fixture(scope="session")
def postgres_server(postgres_bin: Path) -> Iterator[pglib.PostgresServer]:
    """A private PostgreSQL 15 server on loopback for this session (initdb + start: about 1.3 s),
    stopped and removed at the end."""
    # What sessions killed with SIGKILL left running (never a live session's server).
    pglib.reap_orphans()
    # Not under pytest's tmp_path: the server runs as the `postgres` user, which cannot enter it.
    server = pglib.PostgresServer(Path(tempfile.mkdtemp(prefix="engine-pg-")))
    with server:
        yield server


_databases = itertools.count(1)


@pytest.fixture
def postgres_url(postgres_server: pglib.PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """`postgresql://engine@127.0.0.1:PORT/t<N>_<test>`: a new, empty database for this test."""
    slug = re.sub(r"[^a-z0-9_]+", "_", request.node.name.lower()).strip("_")
    name = f"t{next(_databases)}_{slug}"[:63]
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def docker_client() -> Any:
    """The Docker engine, with the runtime image built (before any test's deadline starts).
    Skips the test when no engine answers, unless ENGINE_REQUIRE_DOCKER=1 (CI): then it fails."""
    from engine import images
    from engine.errors import DockerUnavailable

    try:
        client = images.docker_client()
    except DockerUnavailable as exc:
        if os.environ.get("ENGINE_REQUIRE_DOCKER") == "1":  # CI: a missing engine is a failure
            raise
        pytest.skip(str(exc))
    images.build_runtime_image()
    return client
