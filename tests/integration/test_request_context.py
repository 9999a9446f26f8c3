"""`RequestContext` on real executors over real gRPC (tests/integration/apps/app_context.py):
state shared by a request's functions and kept through `kill -9` and `engine resume`, progress
and metrics recorded per call and shown by `engine show`, headers from an HTTP submission (less
credentials) with progress on the run's events and metrics in `/metrics`, and all of it on Docker.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from serverlib import ServerProcess, wait_for_lease_to_run_out
from test_engine_failures import (
    checkpointed_count,
    engine_in_background,
    kill9_when,
)
from test_server import read_events

from engine import run_local_application

APPS = Path(__file__).parent / "apps"


def check_context_result(out: dict[str, Any], run_id: str, n: int) -> None:
    assert out["request_id"] == run_id
    assert out["plan"] == {"topic": "bees", "steps": n}
    assert out["big"] == 3_000_000
    assert out["steps"] == [{"i": i, "topic": "bees"} for i in range(n)]
    assert out["missing"] == "default"


def check_context_details(info: dict[str, Any], n: int) -> None:
    steps = [c for c in info["call_list"] if c["function"] == "step"]
    assert len(steps) == n
    for c in steps:
        assert c["progress"]["current"] == 1 and c["progress"]["total"] == 1
        assert c["progress"]["message"].startswith("step ")
        assert c["progress"]["attributes"] == {"topic": "bees"}
        assert c["metrics"]["counters"] == {"steps": 1, "items": 10}
        assert c["metrics"]["timers"]["step_seconds"] == {"count": 1, "sum": 0.25, "min": 0.25, "max": 0.25}
    root = next(c for c in info["call_list"] if c["function"] == "context_app")
    assert root["progress"] == {"current": 0, "total": n, "message": "planned", "attributes": None}
    assert info["metrics"]["counters"] == {"plans": 1, "steps": n, "items": 10 * n}
    assert info["metrics"]["timers"]["step_seconds"]["count"] == n
    assert info["metrics"]["timers"]["step_seconds"]["sum"] == pytest.approx(0.25 * n)


def test_state_progress_and_metrics_across_a_request(apps, state_dir, show, cli) -> None:
    app = apps("app_context")
    request = run_local_application(app.context_app, 5)
    out = request.output()
    check_context_result(out, request.id, 5)
    assert out["headers"] == []  # not submitted over HTTP
    check_context_details(show(request.id), 5)

    code, text, err = cli("show", request.id)
    assert code == 0, err
    assert "[1/1] step 3" in text
    assert "metrics: items 50, plans 1, steps 5; step_seconds 5× 1.250s" in text


def test_state_written_by_finished_calls_survives_kill_9_and_resume(apps, state_dir, side_effects,
                                                                   cli, wait_until, tmp_path) -> None:
    """The engine dies (`kill -9`, with every executor) in the middle of a fan-out whose calls
    each write a state key: after `engine resume`, the calls that were checkpointed are not run
    again, yet the run's last call reads every key — theirs were durable with their results."""
    app_file = APPS / "app_context.py"
    n, pause = 16, 0.3
    with engine_in_background(["run", f"{app_file}:context_crash", "--json", "--input",
                               json.dumps({"n": n, "log": str(side_effects), "pause": pause})],
                              tmp_path) as engine:
        kill9_when(engine, lambda: checkpointed_count(state_dir, "slow_step") >= 3,
                   "3 steps to be checkpointed", tmp_path, timeout=60)

    from engine.store import open_store, store_url

    store = open_store(store_url(state_dir))
    try:
        (run,) = store.list_runs()
        done = {c.call_id for c in store.load_calls(run.run_id)
                if c.function == "slow_step" and c.status == "succeeded"}
        state_keys = set(store.load_state(run.run_id))
    finally:
        store.close()
    assert run.status == "running" and 3 <= len(done) < n, len(done)
    assert "plan" in state_keys

    finished_before = {int(f[0]) for f in side_effects.tagged("end")}
    wait_for_lease_to_run_out(state_dir, run.run_id)
    code, text, err = cli("resume", run.run_id, "--json")
    assert code == 0, err
    result = json.loads(text)
    assert result["status"] == "succeeded", result
    assert result["result"] == [["crash", i] for i in range(n)]

    starts = Counter(int(f[0]) for f in side_effects.tagged("start"))
    code, text, err = cli("show", run.run_id, "--json")
    info = json.loads(text)
    reused = [c for c in info["call_list"] if c["function"] == "slow_step" and c["id"] in done]
    assert len(reused) == len(done)
    assert all(c["executions"] == 1 for c in reused)
    # Steps that ended before the kill and were checkpointed ran once: their state writes were
    # read back from the store, not made again.
    assert sum(1 for i in finished_before if starts[i] == 1) >= len(done)
    assert len(side_effects.tagged("root")) == 1  # the root handed off by tail call


def test_headers_progress_events_and_metrics_on_the_server(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "state").start()
    try:
        server.deploy(APPS / "app_context.py")
        run_id = server.submit("context_app", 3,
                               headers={"X-User": "ada", "X-Trace": "t-1", "Cookie": "session=1",
                                        "Authorization": "Bearer not-for-functions"})
        events = list(read_events(server, run_id))
        run = server.wait(run_id)
        assert run["status"] == "succeeded", run
        out = server.ok("GET", f"/v1/runs/{run_id}/output")
        check_context_result(out, run_id, 3)
        names = {k.lower(): v for k, v in out["headers"]}
        assert names["x-user"] == "ada" and names["x-trace"] == "t-1"
        assert "authorization" not in names and "cookie" not in names  # credentials stay out

        shown = [data for event, data in events if event == "call" and data.get("progress")]
        assert any(d["function"] == "step" and d["progress"]["message"].startswith("step ") for d in shown)

        calls = server.ok("GET", f"/v1/runs/{run_id}/dag")["nodes"]
        step = next(c for c in calls if c["function"] == "step")
        assert step["metrics"]["counters"] == {"steps": 1, "items": 10}

        status, text = server.request("GET", "/metrics")
        assert status == 200
        assert ('engine_request_counter_total{application="context_app",function="step",name="items"} 30.0'
                in text), text
        assert ('engine_request_timer_seconds_count{application="context_app",function="step",'
                'name="step_seconds"} 3.0') in text
    finally:
        server.stop()


@pytest.mark.docker
def test_request_context_in_containers(docker_client, state_dir, cli) -> None:
    code, text, err = cli("run", f"{APPS / 'app_context.py'}:context_app", "--backend", "docker",
                          "--input", "4", "--json")
    assert code == 0, err
    result = json.loads(text.strip().splitlines()[-1])
    assert result["status"] == "succeeded", result
    check_context_result(result["result"], result["run_id"], 4)
    code, text, err = cli("show", result["run_id"], "--json")
    check_context_details(json.loads(text), 4)
