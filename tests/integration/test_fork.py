"""A call may fork: a `multiprocessing` pool (fork and spawn), `os.fork`, a subprocess, children
that leave the function without `os._exit` — on a real executor, which serves gRPC while the
call forks ("Forking inside a call" in `engine.executor.server`).

Each test runs `fork_app` (tests/integration/apps/app_fork.py) with a real `engine run`: two
calls of one kind on one executor. It checks the results, that the run ends within a deadline
(a fork that hangs or crashes the executor fails here instead of hanging the suite), that the
second call ran on the same executor (still healthy after the fork) and saw nothing the first
one started still running, and that nothing is left once the engine has exited. Every engine,
executor and container a test starts is killed or removed at the end, pass or fail.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import APPS_DIR, poll
from serverlib import executors_of

APP = "app_fork.py:fork_app"
N = 7
SQUARES = [i * i for i in range(N)]
#: What each kind's calls compute: `result` and, where there is one, the children's exit codes.
EXPECTED: dict[str, dict[str, Any]] = {
    "fork_pool": {"result": SQUARES},
    "spawn_pool": {"result": SQUARES},
    "bare_fork": {"result": [SQUARES] * 10, "exit_codes": [7] * 10},
    "subprocess": {"result": SQUARES, "exit_code": 0},
    # A multiprocessing.Process that ends well exits with 0; RequestContext is refused in it.
    "mp_process": {"result": SQUARES, "exit_code": 0, "context": "SDKUsageError: True"},
    # sys.exit(3); an exception (an engine call, refused in a forked child); a return.
    "fork_and_leave": {"result": [3, 1, 0]},
}
#: Seconds a whole run may take: two calls that each fork a few times, and the executors'
#: start-up (containers on docker, the image already built).
DEADLINE_S = {"process": 60, "docker": 120}


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")



@pytest.fixture
def engines() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Engine processes a test starts; each is killed at the end, with the executors it started
    (and their process groups: whatever the calls forked)."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for engine in started:
        executors = executors_of(engine.pid)
        if engine.poll() is None:
            engine.kill()
        engine.wait(10)
        for pid in executors:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def run_fork_app(kind: str, backend: str, env: dict[str, str], tmp_path: Path,
                 engines: list[subprocess.Popen[bytes]]) -> tuple[subprocess.Popen[bytes], list[dict[str, Any]]]:
    """`engine run fork_app` in the background; waits for it with the backend's deadline and
    returns the engine and what the two calls returned."""
    out_path, err_path = tmp_path / "engine.out", tmp_path / "engine.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        engine = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "run", APP, "--backend", backend, "--json",
             "--input", json.dumps({"kind": kind, "n": N})],
            stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=APPS_DIR, env=env)
    engines.append(engine)
    began = time.monotonic()
    poll(lambda: engine.poll() is not None, timeout=DEADLINE_S[backend], interval=0.05,
         what=f"{kind} on the {backend} backend to finish (a fork that hangs or crashes the executor)")
    took = time.monotonic() - began
    output = out_path.read_text(errors="replace") + err_path.read_text(errors="replace")
    assert engine.returncode == 0, output
    lines = out_path.read_text().strip().splitlines()
    assert lines, output
    run = json.loads(lines[-1])
    assert run["status"] == "succeeded", (run, output)
    print(f"{kind} on {backend}: {took:.1f} s")
    return engine, run["result"]


def check_calls(kind: str, calls: list[dict[str, Any]]) -> None:
    first, second = calls
    for call in calls:
        for key, value in EXPECTED[kind].items():
            assert call[key] == value, (key, call)
        assert call["pids"], call
    assert first["executor"] == second["executor"], "both calls go to the one warm executor"
    # The second call ran on the executor the first one forked in: it is healthy. And nothing
    # the first call started runs on, but for multiprocessing's one resource tracker (spawn).
    assert second["still_running"] == [], calls
    assert len(set(first["helpers"]) | set(second["helpers"])) <= (1 if kind == "spawn_pool" else 0), calls
    if kind.endswith("_pool"):
        workers = set(first["pids"]) - set(first["helpers"])
        assert len(workers) >= 2, first  # Pool(2)


KINDS = list(EXPECTED)


@pytest.mark.parametrize("kind", KINDS)
def test_a_call_that_forks_on_the_process_backend(kind: str, state_dir: Path, tmp_path: Path,
                                                   engines: list) -> None:
    engine, calls = run_fork_app(kind, "process", dict(os.environ), tmp_path, engines)
    check_calls(kind, calls)
    started = {pid for call in calls for pid in [call["executor"], *call["pids"], *call["helpers"]]}
    poll(lambda: not any(alive(pid) for pid in started), timeout=10,
         what=f"the executor and every process its calls started ({sorted(started)}) to end with the engine")
    assert executors_of(engine.pid) == []
    logs = "".join(p.read_text(errors="replace") for p in (state_dir / "executors").glob("*.log"))
    assert "Segmentation fault" not in logs and "SIGSEGV" not in logs, logs
    if kind == "fork_and_leave":
        # The child that called an engine function was told why it may not, on its way out.
        assert "cannot be called from a process forked inside a call" in logs, logs


# --- docker ------------------------------------------------------------------------------------



def containers_of(client: Any, engine_pid: int) -> list[dict[str, Any]]:
    return client.api.containers(all=True, filters={
        "label": ["engine.managed=1", f"engine.owner_pid={engine_pid}"]})


@pytest.fixture
def docker_engines(docker_client: Any, engines: list) -> Iterator[list[subprocess.Popen[bytes]]]:
    """As `engines`, and every container of those engines is removed at the end."""
    import docker.errors

    yield engines
    for engine in engines:
        for container in containers_of(docker_client, engine.pid):
            try:
                docker_client.api.remove_container(container["Id"], force=True)
            except docker.errors.NotFound:
                pass  # removed meanwhile by the engine itself
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: its removal is already in progress
                    raise


@pytest.mark.docker
@pytest.mark.parametrize("kind", KINDS)
def test_a_call_that_forks_on_the_docker_backend(kind: str, docker_client: Any, tmp_path: Path,
                                                  docker_engines: list) -> None:
    env = {**os.environ, "ENGINE_STATE_DIR": str(tmp_path / "state")}
    env.pop("ENGINE_BACKEND", None)
    engine, calls = run_fork_app(kind, "docker", env, tmp_path, docker_engines)
    check_calls(kind, calls)
    # Inside the container the second call saw nothing left running; the containers themselves
    # (and whatever ran in them) go with the engine: it sent their removal as it ended, and
    # Docker carries it out.
    poll(lambda: containers_of(docker_client, engine.pid) == [], timeout=30, interval=0.2,
         what="the ended engine's containers to be removed")
