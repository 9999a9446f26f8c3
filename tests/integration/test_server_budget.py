"""A run's budget on `engine server`: `?budget=` beside the input on POST …/runs and
…/resume (the body keeps its shape), the run JSON's `budget` object, and a malformed one
answered 422 in one line."""

from __future__ import annotations

from pathlib import Path

from serverlib import SERVER_APPS, ServerProcess


def test_budget_query_fails_the_run_and_resume_raises_it(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "state").start()
    try:
        server.deploy(SERVER_APPS / "server_app.py")
        status, body = server.request("POST", "/v1/applications/fan/runs?budget=calls=4", 6)
        assert status == 202, body
        run = server.wait(body["run_id"])
        assert run["status"] == "failed"
        error = run["error"]
        assert (error["kind"], error["type"], error["function"]) == ("budget_exceeded", "BudgetExceeded", "fan")
        assert "max_calls=4" in error["message"] and error["call_id"]
        assert run["budget"]["limits"] == {"max_calls": 4, "max_depth": None, "max_duration": None}
        # fan's tail call hands 7 futures over at once: 3 fitted, the 4th was refused, and none
        # of the 3 started (only fan itself ever ran).
        assert run["budget"]["use"]["calls"] == 4
        assert run["calls"]["executions"] == 1

        status, body = server.request("POST", f"/v1/runs/{run['run_id']}/resume?budget=calls=100")
        assert status == 202, body
        run = server.wait(run["run_id"])
        assert run["status"] == "succeeded" and run["result"] == sum(i * i for i in range(6))
        assert run["budget"]["limits"]["max_calls"] == 100 and run["budget"]["use"]["calls"] == 8
        dag = server.ok("GET", f"/v1/runs/{run['run_id']}/dag")
        assert dag["run"]["budget"]["use"]["calls"] == 8

        status, body = server.request("POST", "/v1/applications/fan/runs?budget=calls=lots", 6)
        assert status == 422 and "bad budget" in body["error"] and "\n" not in body["error"]
        openapi = server.ok("GET", "/openapi.json")
        assert "Budget" in openapi["components"]["schemas"]
    finally:
        server.stop()
