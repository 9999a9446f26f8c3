"""The warm pool (`engine.scheduler.warm`): blank executors started with `engine server`, before
any run asks, serve a function's first call; the pool refills, stays within `max_executors`,
and nothing of it outlives its engine — stopped, or killed with SIGKILL.

Real `engine server` processes, real executor processes and containers, real gRPC. Which
executor served a call is read from the call itself (`warm_apps/warm_app.py` returns its pid and
its container's hostname, which Docker sets to the container's id).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from serverlib import ServerProcess, executors_of, poll

APP = Path(__file__).resolve().parent / "warm_apps" / "warm_app.py"
GRACE_ENV = "ENGINE_EXECUTOR_ORPHAN_TIMEOUT"


def server_env(warm: int, **extra: str) -> dict[str, str]:
    return {**os.environ, "ENGINE_WARM_EXECUTORS": str(warm), **extra}


def containers_of(client: Any, engine_pid: int, *, running_only: bool = False) -> dict[str, dict[str, Any]]:
    """The containers the engine process `engine_pid` started, by id."""
    found = client.api.containers(all=not running_only, filters={
        "label": ["engine.managed=1", f"engine.owner_pid={engine_pid}"]})
    return {c["Id"]: c for c in found}


def warm_ready(server: ServerProcess) -> int:
    """The server's `engine_executors_warm` gauge: blank executors up and held by their stream."""
    text = server.ok("GET", "/metrics")
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith("engine_executors_warm{"))


def served_by(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [result["root"], result["child"]]


@pytest.fixture
def servers(tmp_path: Path) -> Any:
    """Servers a test starts; each is stopped (and what it left reaped) at the end."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


def test_a_served_runs_first_calls_go_to_blank_executors_started_before_it(
        tmp_path: Path, servers: list[ServerProcess]) -> None:
    server = ServerProcess(tmp_path / "state", env=server_env(2)).start()
    servers.append(server)
    blank = poll(lambda: (found := executors_of(server.proc.pid)) and len(found) == 2 and found,
                 timeout=60, what="two blank executors before any run")
    poll(lambda: warm_ready(server) == 2, timeout=60, what="the blank executors to be up")
    server.deploy(APP)
    run = server.wait(server.submit("first", 7))
    assert run["status"] == "succeeded", run
    result = run["result"]
    # Both functions had no executor: each got one of the two started before the run.
    assert sorted(r["pid"] for r in served_by(result)) == sorted(blank), (result, blank)
    assert result["child"]["x"] == 7
    assert [r["blank"] for r in served_by(result)] == [None, None]
    # Refilled: two more blank executors, beside the two now serving `first` and `child`.
    now = poll(lambda: (found := executors_of(server.proc.pid)) and len(found) == 4 and found,
               timeout=60, what="the warm pool to refill")
    assert set(blank) < set(now)
    # A new run of the same application reuses the functions' executors; the blank ones wait.
    again = server.wait(server.submit("first", 8))
    assert sorted(r["pid"] for r in served_by(again["result"])) == sorted(blank)


def maps_pydantic(pid: int) -> bool:
    """Whether the process has pydantic's compiled core loaded."""
    try:
        return "pydantic_core" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def test_blank_executors_import_pydantic_while_they_wait_and_executors_given_a_function_do_not(
        tmp_path: Path, servers: list[ServerProcess]) -> None:
    """A blank executor uses its wait for the import most applications begin with; one started
    for a function is initialised at once and imports only what the function's module does."""
    server = ServerProcess(tmp_path / "state", env=server_env(2)).start()
    servers.append(server)
    poll(lambda: warm_ready(server) == 2, timeout=60, what="two blank executors, up and held")
    blank = executors_of(server.proc.pid)
    poll(lambda: all(maps_pydantic(pid) for pid in blank), timeout=30,
         what="the blank executors to import pydantic while they wait")
    cold = ServerProcess(tmp_path / "cold", env=server_env(0)).start()
    servers.append(cold)
    cold.deploy(APP)  # warm_app.py imports no pydantic
    run = cold.wait(cold.submit("first", 3))
    assert run["status"] == "succeeded", run
    started = executors_of(cold.proc.pid)
    assert len(started) == 2 and not any(maps_pydantic(pid) for pid in started), started


def test_blank_executors_count_within_max_executors(tmp_path: Path, servers: list[ServerProcess]) -> None:
    config = tmp_path / "engine.yaml"
    config.write_text("max_executors: 3\nwarm_executors: 5\n")
    server = ServerProcess(tmp_path / "state", env=server_env(5) | {"ENGINE_WARM_EXECUTORS": ""},
                           extra=("--config", str(config))).start()
    servers.append(server)
    blank = poll(lambda: (found := executors_of(server.proc.pid)) and len(found) == 3 and found,
                 timeout=60, what="three blank executors (max_executors), not five")
    server.deploy(APP)
    run = server.wait(server.submit("first", 1))
    assert run["status"] == "succeeded", run
    assert {r["pid"] for r in served_by(run["result"])} <= set(blank)
    # Two taken, one left; the pool may not grow past max_executors to refill.
    found = executors_of(server.proc.pid)
    assert len(found) <= 3 and set(found) <= set(blank), (found, blank)


def test_warm_executors_zero_turns_the_pool_off(tmp_path: Path, servers: list[ServerProcess]) -> None:
    server = ServerProcess(tmp_path / "state", env=server_env(0)).start()
    servers.append(server)
    server.deploy(APP)
    assert executors_of(server.proc.pid) == []
    run = server.wait(server.submit("first", 2))
    assert run["status"] == "succeeded", run
    assert len(executors_of(server.proc.pid)) == 2  # one per function, started for the run


def test_a_bad_warm_executors_value_is_one_clear_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "run", f"{APP}:first", "--input", "1",
                           "--backend", "process", "--state-dir", str(tmp_path / "state")],
                          env=server_env(0) | {"ENGINE_WARM_EXECUTORS": "lots"},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("engine: ENGINE_WARM_EXECUTORS must be a whole number")
    assert "Traceback" not in proc.stderr


def test_engine_run_uses_the_warm_pool_and_leaves_no_executor(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", f"{APP}:first", "--input", "3",
                             "--backend", "process", "--state-dir", str(tmp_path / "state"), "--json"],
                            env=server_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["status"] == "succeeded" and result["result"]["child"]["x"] == 3
    assert executors_of(proc.pid) == []


@pytest.mark.docker
def test_docker_blank_containers_serve_a_run_and_go_with_the_server(
        docker_client: Any, tmp_path: Path, servers: list[ServerProcess]) -> None:
    env = server_env(2) | {"ENGINE_STATE_DIR": str(tmp_path / "state")}
    env.pop("ENGINE_BACKEND", None)
    server = ServerProcess(tmp_path / "state", backend="docker", env=env).start(timeout=180)
    servers.append(server)
    pid = server.proc.pid
    blank = poll(lambda: (found := containers_of(docker_client, pid, running_only=True))
                 and len(found) == 2 and found, timeout=120, what="two blank containers before any run")
    assert {c["Labels"]["engine.function"] for c in blank.values()} == {"(blank)"}
    server.deploy(APP)
    run = server.wait(server.submit("first", 5), timeout=120)
    assert run["status"] == "succeeded", run
    # Docker sets a container's hostname to the start of its id.
    hosts = {r["host"] for r in served_by(run["result"])}
    assert hosts == {cid[:12] for cid in blank}, (hosts, list(blank))
    poll(lambda: len(containers_of(docker_client, pid, running_only=True)) == 4, timeout=120,
         what="two new blank containers beside the two serving")
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(60)
    assert containers_of(docker_client, pid) == {}, "a stopped server leaves no container behind"


@pytest.mark.docker
def test_blank_containers_of_a_killed_server_end_and_are_swept(
        docker_client: Any, tmp_path: Path, servers: list[ServerProcess]) -> None:
    grace = 3
    env = server_env(2, **{GRACE_ENV: str(grace)}) | {"ENGINE_STATE_DIR": str(tmp_path / "state")}
    env.pop("ENGINE_BACKEND", None)
    server = ServerProcess(tmp_path / "state", backend="docker", env=env).start(timeout=180)
    servers.append(server)
    pid = server.proc.pid
    try:
        # Ready once each has answered its stream's opening, i.e. holds it (one killed before
        # that, as any executor still starting, waits for the next engine's sweep).
        poll(lambda: warm_ready(server) == 2, timeout=120, what="two blank containers, up and held")
        server.kill9()
        # Never initialised, but held by their Calls stream: they end within the grace (or,
        # on a Docker engine shared with other live engines, one of those sweeps them first).
        poll(lambda: not containers_of(docker_client, pid, running_only=True), timeout=grace + 30,
             interval=0.5, what="the blank containers to exit after their engine was killed")
        proc = subprocess.run([sys.executable, "-m", "engine.cli", "run", f"{APP}:first", "--input", "1",
                               "--backend", "docker", "--json"], env=server_env(0) | {
                                   "ENGINE_STATE_DIR": str(tmp_path / "next")},
                              capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr
        assert containers_of(docker_client, pid) == {}
    finally:
        for cid in containers_of(docker_client, pid):
            docker_client.api.remove_container(cid, force=True)


@pytest.mark.docker
def test_docker_engine_run_starts_blank_containers_early_and_leaves_none(docker_client: Any, tmp_path: Path) -> None:
    """`engine run` starts its blank containers before it loads the application; a one-call
    run uses one and ends before the other is taken, and neither is left behind (nor any other
    container of the run: the runner's docker backend took the early one's instance id)."""
    env = server_env(2) | {"ENGINE_STATE_DIR": str(tmp_path / "state")}
    env.pop("ENGINE_BACKEND", None)
    began = int(time.time()) - 1
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", f"{APP}:first", "--input", "4",
                             "--backend", "docker", "--json"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert "Traceback" not in err, err
        result = json.loads(out.strip().splitlines()[-1])
        assert result["status"] == "succeeded" and result["result"]["child"]["x"] == 4
        # The root ran in the first container the run created: the blank one started before the
        # application was loaded (Docker sets a container's hostname to the start of its id).
        created = [e for e in docker_client.events(since=began, until=int(time.time()) + 1, decode=True, filters={
            "type": "container", "event": "create", "label": f"engine.owner_pid={proc.pid}"})]
        assert created and created[0]["Actor"]["Attributes"]["engine.function"] == "(blank)", created
        assert result["result"]["root"]["host"] == created[0]["id"][:12]
        # It sent each removal as it ended, without waiting: Docker carries them out shortly
        # after (test_docker_exit.py), long before an executor's orphan timeout would stop one.
        poll(lambda: containers_of(docker_client, proc.pid) == {}, timeout=10,
             what="the run's containers, running or stopped, to be removed after it exited")
    finally:
        for cid in containers_of(docker_client, proc.pid):
            docker_client.api.remove_container(cid, force=True)
