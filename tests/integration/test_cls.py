"""`@cls()` on real executors over real gRPC, on the process backend and on Docker: the
constructor runs once per executor however many calls it serves, within `init_timeout`, and a
constructor that raises fails the call naming the class, with its traceback, and a retry runs on
a fresh executor (tests/integration/apps/app_stateful.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from engine import FunctionError, FunctionTimeout, run_local_application

APPS = Path(__file__).parent / "apps"


@pytest.fixture
def stateful(apps, state_dir, side_effects, monkeypatch):
    monkeypatch.setenv("ENGINE_TEST_LOG", str(side_effects))
    return apps("app_stateful")


def test_the_constructor_runs_once_per_executor_across_many_calls(stateful, side_effects, show) -> None:
    request = run_local_application(stateful.many, 40)
    out = request.output()
    assert [r[0] for r in out] == [100 + i for i in range(40)]
    inits = side_effects.tagged("init")
    calls = side_effects.tagged("call")
    assert len(calls) == 40
    # One constructor per executor (process), and every call an executor served used its one
    # instance, which kept its state from call to call.
    executors = {c[1] for c in calls}
    assert sorted(i[1] for i in inits if i[0] == "Counter") == sorted(executors)
    instances = defaultdict(set)
    for c in calls:
        instances[c[1]].add(c[2])
    assert all(len(v) == 1 for v in instances.values())
    served = defaultdict(list)
    for _, where, _, calls_seen, inits_seen in out:
        served[where].append(calls_seen)
        assert inits_seen == 1
    assert all(sorted(v) == list(range(1, len(v) + 1)) for v in served.values())
    assert len(executors) < 40  # executors served several calls each
    info = show(request.id)
    assert info["calls"]["executions"] == 41 and info["calls"]["failed"] == 0


def test_call_site_forms(stateful) -> None:
    # Model().method(x), .future(x).result(), .map([...]) — Tensorlake's forms.
    assert run_local_application(stateful.forms, 1).output() == [101, 102, 103, 104]


def test_concurrent_calls_share_the_instance_only_when_concurrency_allows(stateful, side_effects) -> None:
    out = run_local_application(stateful.concurrent, 8).output()
    by_executor = defaultdict(set)
    for where, instance, inits in out:
        by_executor[where].add(instance)
        assert inits == 1
    assert all(len(v) == 1 for v in by_executor.values())
    assert side_effects.count("init", "Counter") == len(by_executor)


def test_a_constructor_that_raises_fails_naming_the_class_and_a_retry_gets_a_fresh_executor(
        stateful, side_effects, show) -> None:
    started = time.monotonic()
    request = run_local_application(stateful.broken, 1)
    assert request.status == "failed"
    with pytest.raises(FunctionError) as caught:
        request.output()
    err = caught.value
    assert "Broken.__init__ raised ValueError: no weights on" in str(err)
    assert "ClassInitError" in str(err) and "this executor is replaced" in str(err)
    assert isinstance(err.__cause__, ValueError)
    assert err.traceback and 'raise ValueError(f"no weights on {executor()}")' in err.traceback
    assert "in __init__" in err.traceback
    # max_retries=2: three attempts, three constructors, each on an executor of its own.
    pids = [i[1] for i in side_effects.tagged("init") if i[0] == "Broken"]
    assert len(pids) == 3 and len(set(pids)) == 3
    calls = {c["function"]: c for c in show(request.id)["call_list"]}
    assert calls["Broken.score"]["executions"] == 3
    assert time.monotonic() - started < 30


def test_init_timeout_is_enforced(stateful, side_effects) -> None:
    started = time.monotonic()
    request = run_local_application(stateful.slow, 1)
    elapsed = time.monotonic() - started
    with pytest.raises(FunctionTimeout) as caught:
        request.output()
    message = str(caught.value)
    assert "Slow.__init__ did not finish within init_timeout=1 s" in message
    assert "time.sleep(30)" in (caught.value.traceback or "")  # where the constructor was
    assert side_effects.count("init", "Slow") == 1
    assert elapsed < 15  # the 30 s constructor was abandoned, and its executor with it


# --- Docker -------------------------------------------------------------------------------


def _cli(env, *args, timeout=240):
    proc = subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=APPS, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def docker_env(tmp_path):
    from engine import images
    from engine.errors import DockerUnavailable

    try:
        images.docker_client()
    except DockerUnavailable as exc:
        if os.environ.get("ENGINE_REQUIRE_DOCKER") == "1":
            raise
        pytest.skip(str(exc))
    images.build_runtime_image()
    env = dict(os.environ)
    env["ENGINE_STATE_DIR"] = str(tmp_path / "state")
    env.pop("ENGINE_BACKEND", None)
    env.pop("ENGINE_TEST_LOG", None)
    return env


def _run(env, target, value):
    code, out, err = _cli(env, "run", f"app_stateful.py:{target}", "--input", json.dumps(value),
                          "--backend", "docker", "--json")
    assert out.strip(), f"no output (exit {code}): {err}"
    return code, json.loads(out.strip().splitlines()[-1]), err


@pytest.mark.docker
def test_docker_the_constructor_runs_once_per_container(docker_env) -> None:
    code, result, err = _run(docker_env, "many", 30)
    assert code == 0, err
    out = result["result"]
    assert [r[0] for r in out] == [100 + i for i in range(30)]
    served = defaultdict(list)
    for _, where, instance, calls_seen, inits_seen in out:
        served[where].append((instance, calls_seen))
        assert inits_seen == 1  # one constructor in that container, whatever it served
    for seen in served.values():
        assert len({instance for instance, _ in seen}) == 1
        assert sorted(n for _, n in seen) == list(range(1, len(seen) + 1))
    assert len(served) < 30


@pytest.mark.docker
def test_docker_a_failed_constructor_is_retried_in_a_fresh_container(docker_env) -> None:
    code, result, err = _run(docker_env, "broken", 1)
    assert code != 0 and result["status"] == "failed"
    assert "Broken.__init__ raised ValueError: no weights on" in json.dumps(result)
    code, logs, err = _cli(docker_env, "logs", result["run_id"])
    assert code == 0, err
    hosts = re.findall(r"Broken built on (\S+)", logs)
    assert len(hosts) == 3 and len(set(hosts)) == 3, logs  # three attempts, three containers
