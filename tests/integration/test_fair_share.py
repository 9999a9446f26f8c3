"""Fair share between runs on a real `engine server` (process backend): a small run submitted
while a large run of the same application fills its executors finishes long before it, and a
submission's priority is kept with its run. Ordering, never timing, is asserted."""

from __future__ import annotations

import pytest
from serverlib import SERVER_APPS, ServerProcess, poll

APP = SERVER_APPS / "fair_app.py"
LARGE = 400


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    srv = ServerProcess(tmp_path_factory.mktemp("server") / "state").start()
    try:
        srv.deploy(APP)
        yield srv
    finally:
        srv.stop()


def succeeded_calls(server: ServerProcess, run_id: str) -> int:
    return int(server.ok("GET", f"/v1/runs/{run_id}")["calls"].get("succeeded", 0))


def test_a_small_run_overtakes_a_large_one(server: ServerProcess) -> None:
    assert server.wait(server.submit("spread", 2))["result"] == 2  # executors up
    large = server.submit("spread", LARGE)
    # The large run's calls are all queued, and some have run.
    poll(lambda: succeeded_calls(server, large) >= 10, 60, what="the large run under way")
    small = server.submit("spread", 4)
    assert server.wait(small, timeout=120)["result"] == 4
    large_run = server.ok("GET", f"/v1/runs/{large}")
    # First come, first served would have run (nearly) every one of the large run's calls
    # before the small run's; taking turns, the small one is done while most still wait.
    assert large_run["status"] == "running"
    assert large_run["calls"].get("succeeded", 0) < LARGE // 2
    done = server.wait(large, timeout=180)
    assert done["result"] == LARGE
    assert server.ok("GET", f"/v1/runs/{small}")["ended_at"] < done["ended_at"]


def test_priority_is_kept_with_the_run(server: ServerProcess) -> None:
    status, body = server.request("POST", "/v1/applications/spread/runs?priority=3", 1)
    assert status == 202, body
    run = server.wait(body["run_id"])
    assert run["status"] == "succeeded" and run["priority"] == 3
    assert server.wait(server.submit("spread", 1))["priority"] == 1
    # Resumed from its checkpoints (`Scheduler.resume_run` reads it from the row), it keeps it.
    status, body = server.request("POST", "/v1/applications/spread/runs?priority=5", 80)
    assert status == 202, body
    run_id = body["run_id"]
    poll(lambda: succeeded_calls(server, run_id) >= 2, 60, what="some calls checkpointed")
    server.ok("POST", f"/v1/runs/{run_id}/cancel")
    assert server.wait(run_id)["status"] == "cancelled"
    server.ok("POST", f"/v1/runs/{run_id}/resume")
    resumed = server.wait(run_id)
    assert resumed["status"] == "succeeded" and resumed["resumes"] == 1 and resumed["priority"] == 5
    for bad in ("0", "101", "high"):
        status, body = server.request("POST", f"/v1/applications/spread/runs?priority={bad}", 1)
        assert status == 400 and "priority" in body["error"], body
