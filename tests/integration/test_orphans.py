"""Nothing outlives the engine that owns it: executors left by a killed (or silent) engine end by
themselves, even in the middle of a call that never returns (`engine.executor.lifetime`), and
the next engine sweeps away the containers they leave.

Real `engine run` processes, real executor processes and containers; the engine is killed with
SIGKILL (or frozen with SIGSTOP: silent, its connections open).
Every process and container a test starts is killed or removed at the end, pass or fail.
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
from conftest import APPS_DIR, SideEffects, poll, run_cli
from serverlib import executors_of, template_of

APP = APPS_DIR / "app_hang.py"
GRACE_ENV = "ENGINE_EXECUTOR_ORPHAN_TIMEOUT"


# --- processes ---------------------------------------------------------------------------------



def process_state(pid: int) -> str:
    """The state letter of /proc/PID/stat ('' when there is no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[0]


def alive(pid: int) -> bool:
    return process_state(pid) not in ("", "Z", "X")


def start_engine(tmp_path: Path, *args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`engine ARGS...` in the background, its output in files (no pipe to fill up)."""
    with open(tmp_path / "engine.out", "wb") as out, open(tmp_path / "engine.err", "wb") as err:
        return subprocess.Popen([sys.executable, "-m", "engine.cli", *args], stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, env=env, cwd=APPS_DIR)


def engine_output(tmp_path: Path) -> str:
    return "".join((tmp_path / name).read_text(errors="replace")
                   for name in ("engine.out", "engine.err") if (tmp_path / name).exists())


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Engine processes a test starts; at the end each is killed and reaped, and every executor
    process it started is killed too."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for engine in started:
        leftovers = executors_of(engine.pid)
        with_signal(engine.pid, signal.SIGKILL)
        engine.wait(10)
        for pid in leftovers + executors_of(engine.pid):
            with_signal(pid, signal.SIGKILL)


def with_signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def hang_started(engine: subprocess.Popen[bytes], side_effects: SideEffects,
                 tmp_path: Path) -> tuple[int, int]:
    """Wait until the call that never returns is running; the pids of its executor and of the
    process the call started."""
    poll(lambda: side_effects.tagged("hang") or engine.poll() is not None, timeout=60,
         what="the hanging call to start")
    assert engine.poll() is None, engine_output(tmp_path)
    identity, child = side_effects.tagged("hang")[0][:2]
    return int(identity.rsplit(":", 1)[1]), int(child)


def executor_logs(state_dir: Path) -> dict[str, str]:
    return {p.name: p.read_text(errors="replace") for p in (state_dir / "executors").glob("*.log")}


def test_process_executors_end_with_their_killed_engine_even_mid_call(
        state_dir: Path, side_effects: SideEffects, tmp_path: Path, engines: list) -> None:
    # A grace far longer than the test: only the death of the parent can end these executors.
    env = {**os.environ, GRACE_ENV: "300"}
    engine = start_engine(tmp_path, "run", f"{APP}:hang_app", "--input", json.dumps(str(side_effects)),
                          env=env)
    engines.append(engine)
    hanging, child = hang_started(engine, side_effects, tmp_path)
    executors = executors_of(engine.pid)
    # hang_app's (waiting on hang), quick's (idle) and hang's (in a call that never returns).
    assert hanging in executors and len(executors) == 3, executors
    # Forked from the engine's template (engine.executor.forkserver), which must end too.
    template = template_of(engine.pid)
    assert template is not None

    engine.send_signal(signal.SIGKILL)
    engine.wait(10)
    killed = time.monotonic()
    try:
        poll(lambda: not any(alive(pid) for pid in [*executors, child, template]), timeout=5,
             what=f"executors {executors}, the call's process {child} and the template {template} "
                  "to end after the kill")
    finally:
        with_signal(child, signal.SIGKILL)
    took = time.monotonic() - killed
    assert took < 3, f"the executors took {took:.1f} s to notice their engine was gone"
    logs = executor_logs(state_dir)
    assert len(logs) == 3 and all(f"its engine process {engine.pid} is gone" in text
                                  for text in logs.values()), logs
    # Their temporary directories (the unpacked code) outlive them until the next engine on this
    # state directory starts, which removes them; its own are removed when its executors stop.
    left = sorted(p.name for p in (state_dir / "executors").glob("*.tmp"))
    assert len(left) == 3 and all(f"-{engine.pid}-" in name for name in left), left
    done = subprocess.run([sys.executable, "-m", "engine.cli", "run", f"{APP}:quick_app", "--input", "1"],
                          env=env, cwd=APPS_DIR, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert sorted((state_dir / "executors").glob("*.tmp")) == []


def test_an_executor_whose_engine_falls_silent_ends_after_the_grace(
        state_dir: Path, side_effects: SideEffects, tmp_path: Path, engines: list) -> None:
    """A frozen engine (stopped; a paused VM) keeps its connections open and says nothing, and
    it is still the executors' parent. Keepalive breaks their streams, and the grace ends them."""
    env = {**os.environ, GRACE_ENV: "2"}
    engine = start_engine(tmp_path, "run", f"{APP}:hang_app", "--input", json.dumps(str(side_effects)),
                          env=env)
    engines.append(engine)
    _, child = hang_started(engine, side_effects, tmp_path)
    executors = executors_of(engine.pid)
    assert len(executors) == 3, executors

    engine.send_signal(signal.SIGSTOP)
    frozen = time.monotonic()
    # Keepalive: a ping after 5 s of silence, 5 s for its answer; then the 2 s grace.
    try:
        poll(lambda: not any(alive(pid) for pid in [*executors, child]), timeout=25,
             what=f"executors {executors} and the call's process {child} to end after the freeze")
    finally:
        with_signal(child, signal.SIGKILL)
    took = time.monotonic() - frozen
    assert took > 2, f"the executors ended {took:.1f} s after the freeze: before the grace"
    assert engine.poll() is None, "the frozen engine must still be there: the parent check did not fire"
    logs = executor_logs(state_dir)
    assert len(logs) == 3 and all("no scheduler connection for 2 s" in text for text in logs.values()), logs


def test_calls_and_idle_executors_outlast_the_grace_while_their_engine_lives(
        state_dir: Path, side_effects: SideEffects) -> None:
    code, out, err = run_cli("run", f"{APP}:slow_app", "--json", "--input",
                             json.dumps({"log": str(side_effects), "seconds": 3}),
                             env={GRACE_ENV: "1"}, timeout=120)
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["status"] == "succeeded", result
    first, during, last = result["result"]
    assert first == last, "quick's executor idled 3 s with its stream open: it must still be there"
    assert [line[0] for line in side_effects.tagged("slow")] == [during], "slow ran once, to its end"


def test_an_executor_nobody_initialises_ends(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.executor", "--listen", "127.0.0.1:0",
         "--port-file", str(port_file), "--init-timeout", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        poll(port_file.exists, timeout=30, what="the executor to listen")
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "nobody initialised it within 1 s" in err, err


def test_a_grace_that_is_not_a_number_of_seconds_is_one_clear_line(state_dir: Path) -> None:
    code, out, err = run_cli("run", f"{APP}:quick_app", "--input", "1", env={GRACE_ENV: "soon"})
    assert code != 0
    assert GRACE_ENV in err and "soon" in err and "Traceback" not in err, err


def test_the_sweep_knows_a_dead_owner_by_more_than_its_pid() -> None:
    """The label check behind `cleanup_orphans` (docker and swarm), on real processes: a zombie
    and a reused pid are not the engine that labelled an executor."""
    import socket

    from engine.backends.docker import orphaned
    from engine.procstat import start_ticks

    host = socket.gethostname()

    def labels(pid: int, start: str) -> dict[str, str]:
        return {"engine.managed": "1", "engine.instance": "gone", "engine.owner_host": host,
                "engine.owner_pid": str(pid), "engine.owner_start": start}

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = start_ticks(proc.pid)
        assert start
        assert not orphaned(labels(proc.pid, start), "ours", host)  # alive
        assert orphaned(labels(proc.pid, str(int(start) - 1)), "ours", host)  # pid reused
        assert not orphaned(labels(proc.pid, start), "gone", host)  # its own executors: never
        assert not orphaned(labels(proc.pid, start), "ours", "another-host")  # not ours to judge
        proc.kill()
        poll(lambda: process_state(proc.pid) == "Z", timeout=10, what="a zombie")
        assert orphaned(labels(proc.pid, start), "ours", host)  # killed, not yet reaped
    finally:
        proc.kill()
        proc.wait()
    assert orphaned(labels(proc.pid, start), "ours", host)  # reaped


# --- containers --------------------------------------------------------------------------------



def containers_of(client: Any, engine_pid: int) -> list[dict[str, Any]]:
    """Every container (running or not) labelled as started by the engine process `engine_pid`."""
    return client.api.containers(all=True, filters={
        "label": ["engine.managed=1", f"engine.owner_pid={engine_pid}"]})


def running(client: Any, container_id: str) -> bool:
    import docker.errors

    try:
        return bool(client.api.inspect_container(container_id)["State"]["Running"])
    except docker.errors.NotFound:
        return False


@pytest.fixture
def docker_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["ENGINE_STATE_DIR"] = str(tmp_path / "state")
    env.pop("ENGINE_BACKEND", None)
    return env


@pytest.fixture
def docker_engines(docker_client: Any, engines: list) -> Iterator[list[subprocess.Popen[bytes]]]:
    """As `engines`, and every container of those engines is removed at the end."""
    yield engines
    for engine in engines:
        for container in containers_of(docker_client, engine.pid):
            docker_client.api.remove_container(container["Id"], force=True)


@pytest.mark.docker
@pytest.mark.parametrize("network", ["bridge", "shared"])
def test_containers_of_a_killed_engine_stop_by_themselves_and_the_next_run_removes_them(
        docker_client: Any, docker_env: dict[str, str], docker_engines: list, tmp_path: Path,
        network: str) -> None:
    """`shared`: the holder of the executors' network namespace (`engine.backends.holder`) too,
    once its executors are gone."""
    from engine.backends.docker import HOLDER_FUNCTION, NETWORK_ENV
    from engine.backends.holder import MARGIN_S

    grace = 3
    env = {**docker_env, GRACE_ENV: str(grace), NETWORK_ENV: network}
    log = "/tmp/side-effects.log"  # inside the container
    engine = start_engine(tmp_path, "run", "app_hang.py:hang_app", "--backend", "docker",
                          "--input", json.dumps(log), env=env)
    docker_engines.append(engine)

    def hang_running() -> bool:
        assert engine.poll() is None, engine_output(tmp_path)
        for container in containers_of(docker_client, engine.pid):
            if container["Labels"].get("engine.function") == "hang" and container["State"] == "running":
                out = docker_client.api.exec_create(container["Id"], ["cat", log])
                if docker_client.api.exec_start(out).startswith(b"hang|"):
                    return True
        return False

    poll(hang_running, timeout=180, interval=0.2, what="the hanging call to start in its container")
    containers = {c["Labels"]["engine.function"]: c["Id"] for c in containers_of(docker_client, engine.pid)}
    holder = {HOLDER_FUNCTION} if network == "shared" else set()
    assert set(containers) == {"hang_app", "quick", "hang"} | holder, containers

    # Killed and not reaped: the engine's pid stays taken, by a zombie, until the end of the test.
    engine.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    poll(lambda: process_state(engine.pid) == "Z", timeout=10, what="the killed engine to be a zombie")
    executors = [c for f, c in containers.items() if f != HOLDER_FUNCTION]
    poll(lambda: not any(running(docker_client, c) for c in executors), timeout=grace + 12,
         interval=0.2, what=f"the executors to stop by themselves within {grace} s + a margin")
    took = time.monotonic() - killed
    assert took >= grace, f"the containers stopped {took:.1f} s after the kill: before the grace"
    if holder:
        assert running(docker_client, containers[HOLDER_FUNCTION])  # (its grace starts now)
        poll(lambda: not running(docker_client, containers[HOLDER_FUNCTION]), timeout=grace + MARGIN_S + 12,
             interval=0.2, what="the namespace's holder to stop by itself once its executors have")
    reason = docker_client.api.logs(containers["hang"], stdout=True, stderr=True).decode(errors="replace")
    assert f"no scheduler connection for {grace} s" in reason, reason
    assert {c["Id"] for c in containers_of(docker_client, engine.pid)} == set(containers.values()), \
        "the stopped containers should wait for the next engine's sweep"

    # The next engine sweeps them away: their owner is a zombie, which a pid check alone would
    # take for a live engine.
    code, out, err = run_cli("run", "app_hang.py:quick_app", "--backend", "docker", "--json",
                             "--input", "1", cwd=APPS_DIR, env=env, timeout=180)
    assert code == 0, err
    assert process_state(engine.pid) == "Z"
    assert containers_of(docker_client, engine.pid) == []


@pytest.mark.docker
def test_container_calls_longer_than_the_grace_are_unaffected(docker_client: Any,
                                                                docker_env: dict[str, str]) -> None:
    code, out, err = run_cli("run", "app_hang.py:slow_app", "--backend", "docker", "--json",
                             "--input", json.dumps({"log": "/tmp/side-effects.log", "seconds": 3}),
                             cwd=APPS_DIR, env={**docker_env, GRACE_ENV: "1"}, timeout=180)
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["status"] == "succeeded", result
    first, _during, last = result["result"]
    assert first == last, "quick's container idled 3 s with its stream open: it must still be there"


@pytest.mark.docker
def test_a_live_server_sweeps_what_a_killed_engine_left(
        docker_client: Any, docker_env: dict[str, str], docker_engines: list, tmp_path: Path) -> None:
    """A long-lived `engine server` on the same Docker engine removes the stopped containers of
    an engine that died, without waiting for that engine's next start."""
    from serverlib import ServerProcess

    grace = 3
    env = {**docker_env, GRACE_ENV: str(grace), "ENGINE_SWEEP_INTERVAL": "2"}
    (tmp_path / "server-state").mkdir()
    server = ServerProcess(tmp_path / "server-state", backend="docker", env=env).start(timeout=180)
    try:
        engine = start_engine(tmp_path, "run", "app_hang.py:hang_app", "--backend", "docker",
                              "--input", json.dumps("/tmp/side-effects.log"), env=env)
        docker_engines.append(engine)
        poll(lambda: len(containers_of(docker_client, engine.pid)) == 3 or engine.poll() is not None,
             timeout=180, interval=0.2, what="the run's three containers")
        assert engine.poll() is None, engine_output(tmp_path)
        engine.send_signal(signal.SIGKILL)
        engine.wait(10)
        poll(lambda: containers_of(docker_client, engine.pid) == [], timeout=grace + 30, interval=0.5,
             what="the live server to sweep the killed engine's containers")
        assert "swept what dead engines left" in server.log()
    finally:
        server.stop()
