"""The engine on a real Docker engine: every function in its own container, over real gRPC.

Needs a Docker engine (`scripts/ensure-docker.sh`) and builds the runtime image if it is
missing. Each test checks, at the end, that no engine container is left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from serverlib import wait_for_lease_to_run_out

pytestmark = pytest.mark.docker

APPS = Path(__file__).parent / "docker_apps"
APP = "containers.py"



def engine_containers(client, **labels):
    filters = ["engine.managed=1"] + [f"engine.{k}={v}" for k, v in labels.items()]
    # The raw listing: `containers.list` inspects each one and races with their removal.
    return [client.containers.prepare_model(c)
            for c in client.api.containers(all=True, filters={"label": filters})]


def runs_in(state_dir: Path) -> list[str]:
    from engine.store import open_store, store_url

    if not (state_dir / "engine.db").exists():
        return []
    store = open_store(store_url(state_dir))
    try:
        return [r.run_id for r in store.list_runs()]
    finally:
        store.close()


@pytest.fixture
def docker(docker_client, tmp_path):
    yield docker_client

    def left():  # containers of this test's runs (other engines may share the Docker engine)
        return [c.name for run in runs_in(tmp_path / "state")
                for c in engine_containers(docker_client, run=run)]

    deadline = time.monotonic() + 15
    while left() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left(), f"containers left behind: {left()}"


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ)
    e["ENGINE_STATE_DIR"] = str(tmp_path / "state")
    e.pop("ENGINE_BACKEND", None)
    e["ENGINE_LEASE_TTL"] = "3"  # a killed engine's runs are resumable 3 s after it died
    return e


def cli(env, *args, timeout=180):
    proc = subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=APPS, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def start_cli(env, *args):
    return subprocess.Popen([sys.executable, "-m", "engine.cli", *args], cwd=APPS, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_json(env, target, value, *extra):
    code, out, err = cli(env, "run", f"{APP}:{target}", "--input", json.dumps(value),
                         "--backend", "docker", "--json", *extra)
    assert out.strip(), f"no output (exit {code}): {err}"
    return code, json.loads(out.strip().splitlines()[-1]), err


def show(env, run_id):
    code, out, err = cli(env, "show", run_id, "--json")
    assert code == 0, err
    return json.loads(out)


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_fan_out_and_in_across_containers(docker, env):
    code, result, err = run_json(env, "fanout", 20)
    assert code == 0, err
    assert result["status"] == "succeeded" and result["result"] == sum(i * 2 for i in range(20))
    info = show(env, result["run_id"])
    assert info["backend"] == "docker"
    assert info["calls"] == {"total": 22, "succeeded": 22, "failed": 0, "reused": 0, "executions": 22, "executed": 22}


def test_limits_user_and_filesystem_are_enforced_inside_the_container(docker, env):
    code, result, err = run_json(env, "check_limits", None)
    assert code == 0, err
    seen = result["result"]
    assert seen["uid"] == 10001
    assert seen["cpus"] == pytest.approx(0.5)
    assert seen["memory"] == int(0.25 * 1024**3)
    assert seen["root_writable"] is False
    assert seen["docker_socket"] is False


def test_yaml_overrides_decorator_resources(docker, env, tmp_path):
    config = tmp_path / "engine.yaml"
    config.write_text("functions:\n  limits: {cpu: 0.25, memory: 0.5}\n")
    code, result, err = run_json(env, "check_limits", None, "--config", str(config))
    assert code == 0, err
    assert result["result"]["cpus"] == pytest.approx(0.25)
    assert result["result"]["memory"] == int(0.5 * 1024**3)


def test_a_value_larger_than_any_grpc_message_goes_from_container_to_container(docker, env):
    import hashlib

    from engine import wire

    size = 80 * 1024 * 1024
    assert size > wire.INLINE_MAX_BYTES
    code, result, err = run_json(env, "big_between", size)
    assert code == 0, err
    expected = hashlib.sha256(bytes(range(256)) * (size // 256)).hexdigest()
    assert result["result"] == [size, expected]


def test_out_of_memory_is_a_typed_failure_and_is_retried(docker, env):
    code, result, err = run_json(env, "oom", 400)
    assert code == 1
    assert result["status"] == "failed"
    assert "hog ran out of memory (limit 0.125 GB)" in result["error"]
    calls = {c["function"]: c for c in show(env, result["run_id"])["call_list"]}
    assert calls["hog"]["executions"] == 2  # max_retries=1: the OOM kill was retried once
    from engine import OutOfMemory, wire
    from engine.store import open_store, store_url
    from engine.wire.v1 import engine_pb2 as pb

    store = open_store(store_url(Path(env["ENGINE_STATE_DIR"])))
    row = store.get_run(result["run_id"])
    store.close()
    assert isinstance(wire.exception_from_failure(pb.Failure.FromString(row.failure)), OutOfMemory)


def test_timeout_cancels_the_call_and_replaces_its_container(docker, env):
    started = time.monotonic()
    code, result, err = run_json(env, "timeout_app", 60)
    assert code == 1
    assert time.monotonic() - started < 40
    assert "sleeper timed out after 2 s" in result["error"]


def test_killed_container_is_retried_and_siblings_do_not_rerun(docker, env):
    proc = start_cli(env, "run", f"{APP}:branches", "--input", "6", "--backend", "docker", "--json")
    try:
        container = wait_for(lambda: engine_containers(docker, function="slow_branch"), 60,
                             "the slow branch's container")[0]
        # Let the slow call get going, and the fast siblings finish, then kill its container.
        time.sleep(2.5)
        container.kill()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["result"][:4] == ["fast 0", "fast 1", "fast 2", "fast 3"]
    calls = show(env, result["run_id"])["call_list"]
    by_fn: dict[str, list] = {}
    for c in calls:
        by_fn.setdefault(c["function"], []).append(c)
    assert [c["executions"] for c in by_fn["fast_branch"]] == [1, 1, 1, 1]
    assert by_fn["slow_branch"][0]["executions"] == 2
    assert by_fn["slow_branch"][0]["status"] == "succeeded"


def test_orchestrator_container_is_released_after_its_tail_call(docker, env):
    proc = start_cli(env, "run", f"{APP}:branches", "--input", "5", "--backend", "docker", "--json")
    try:
        wait_for(lambda: any(c.status == "running" for c in engine_containers(docker, function="slow_branch")),
                 60, "the slow branch running")
        # The orchestrator returned its tail call before the slow branch started running.
        wait_for(lambda: not engine_containers(docker, function="branches"), 10,
                 "the orchestrator's container to go")
        assert any(c.status == "running" for c in engine_containers(docker, function="slow_branch"))
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err


def test_engine_killed_mid_run_resumes_without_rerunning_finished_calls(docker, env):
    proc = start_cli(env, "run", f"{APP}:steps", "--input", '{"n": 12, "seconds": 1.0}',
                     "--backend", "docker", "--json")
    state = Path(env["ENGINE_STATE_DIR"])

    def finished_steps():
        from engine.store import open_store, store_url

        if not (state / "engine.db").exists():
            return 0
        store = open_store(store_url(state))
        try:
            runs = store.list_runs()
            if not runs:
                return 0
            return sum(1 for c in store.load_calls(runs[0].run_id)
                       if c.function == "step" and c.status == "succeeded")
        finally:
            store.close()

    try:
        wait_for(lambda: finished_steps() >= 3, 90, "three finished steps")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    done_before = finished_steps()
    assert done_before < 12
    code, out, err = cli(env, "runs", "--json")
    run_id = json.loads(out)[0]["run_id"]
    assert engine_containers(docker, run=run_id), "the killed engine's containers should still be there"
    wait_for_lease_to_run_out(Path(env["ENGINE_STATE_DIR"]), run_id)
    code, out, err = cli(env, "resume", run_id, "--json")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["status"] == "succeeded" and result["result"] == sum(range(12))
    info = show(env, run_id)
    assert info["calls"]["reused"] >= done_before
    steps = [c for c in info["call_list"] if c["function"] == "step"]
    assert sum(1 for c in steps if c["executions"] == 1) >= done_before
    assert all(c["executions"] <= 2 for c in steps)


def test_ctrl_c_stops_every_container_and_leaves_the_run_resumable(docker, env):
    proc = start_cli(env, "run", f"{APP}:steps", "--input", '{"n": 8, "seconds": 5.0}',
                     "--backend", "docker", "--json")
    try:
        wait_for(lambda: engine_containers(docker, function="step"), 60, "step containers")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "Traceback" not in err
    code, out, _ = cli(env, "runs", "--json")
    run = json.loads(out)[0]
    assert run["status"] == "cancelled"
    wait_for(lambda: not engine_containers(docker, run=run["run_id"]), 15, "no containers left")


def test_doctor_reports_docker_and_the_runtime_image(docker, env):
    code, out, err = cli(env, "doctor")
    assert code == 0, out + err
    assert "docker: Docker engine" in out
    assert "runtime image: engine-runtime:" in out
