"""Calls of one application from another inside a run (`run_remote_application` in a function),
on real executors: a child call of the run, shown in its graph, reused by a retried caller; and
the same across two deployments of `engine server`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from serverlib import SERVER_APPS, ServerProcess

from engine import run_local_application


def test_an_application_called_inside_a_run_is_a_child_call(apps, state_dir, side_effects, show,
                                                             tmp_path) -> None:
    app = apps("app_child_apps")
    flag = tmp_path / "fail-once"
    flag.touch()
    request = run_local_application(app.caller, 3, str(side_effects), str(flag))
    assert request.output() == ["HI 0!", "HI 1!", "HI 2!", "BY NAME!"]
    assert len(side_effects.tagged("caller")) == 2  # it failed once and was retried
    # The retried caller got the same four children, finished: none ran again.
    assert Counter(f[0] for f in side_effects.tagged("shouter")) == {
        "hi 0": 1, "hi 1": 1, "hi 2": 1, "by name": 1}
    info = show(request.id)
    root = next(c for c in info["call_list"] if c["function"] == "caller")
    children = [c for c in info["call_list"] if c["kind"] == "application"]
    assert len(children) == 4 and all(c["parent"] == root["id"] for c in children)
    assert all(c["function"] == "shouter" and c["executions"] == 1 for c in children)
    # What the called application creates runs in the same run, under its call.
    shouts = [c for c in info["call_list"] if c["function"] == "shout"]
    assert sorted(c["parent"] for c in shouts) == sorted(c["id"] for c in children)


def test_an_unknown_application_is_a_clear_error_in_the_caller(apps, state_dir) -> None:
    app = apps("app_child_apps")
    out = run_local_application(app.calls_unknown, 1).output()
    assert out.startswith("SDKUsageError: ") and "no_such_app" in out, out


def test_a_deployed_application_calls_another_deployed_one(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "state").start()
    try:
        server.deploy(SERVER_APPS / "child_callee.py")
        server.deploy(SERVER_APPS / "child_caller.py")
        run_id = server.submit("ask_callee", "ada")
        run = server.wait(run_id)
        assert run["status"] == "succeeded", run
        assert run["result"] == "callee v1 says hello to ADA"
        nodes = server.ok("GET", f"/v1/runs/{run_id}/dag")["nodes"]
        assert [n["function"] for n in nodes if n["kind"] == "application"] == ["callee"]
        assert {n["function"] for n in nodes} == {"ask_callee", "callee", "upper"}
    finally:
        server.stop()
