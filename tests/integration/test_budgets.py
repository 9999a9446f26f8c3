"""Budgets the engine enforces, on real executor processes: a recursive agent (a function that
fans out to itself) stopped by `max_depth` and by `max_calls` with a typed BudgetExceeded naming
the limit and the call that crossed it, no execution starting after the limit; `max_duration`
stopping a slow run; and `engine resume --budget` with a raised limit finishing the run while
every call that had finished keeps one execution."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine import BudgetExceeded, run_local_application

APPS = Path(__file__).resolve().parent / "apps"
TARGET = f"{APPS / 'app_budget.py'}"


def records(side_effects: Any, tag: str) -> list[list[str]]:
    return side_effects.tagged(tag)  # type: ignore[no-any-return]


def last_dispatch(state_dir: Path, run_id: str) -> float:
    """When the run's last attempt began (the scheduler gave its call an executor), from the
    store. An attempt begun before the run ended may still reach its body a few milliseconds
    after the end (its request was on the wire), so this, not the body's clock, is what
    "nothing started after the run ended" is about."""
    from engine.store import open_store, store_url

    store = open_store(store_url(state_dir))
    try:
        return max(c.started_at for c in store.load_calls(run_id) if c.executions and c.started_at)
    finally:
        store.close()


def test_max_depth_stops_a_recursive_agent(apps, state_dir, side_effects, show) -> None:
    app = apps("app_budget")
    request = run_local_application(app.agent_app, str(side_effects), 8, 2)  # @application(max_depth=3)
    with pytest.raises(BudgetExceeded) as info:
        request.output()
    exc = info.value
    assert (exc.limit, exc.value, exc.function, exc.run_id) == ("max_depth", 3, "agent", request.id)
    assert exc.call_id and exc.call_id in str(exc) and "max_depth=3" in str(exc)
    details = show(request.id)
    # The root is depth 0, agent level 0 is depth 1: levels 0..2 ran; level 3 (depth 4) never existed.
    levels = [int(r[0]) for r in records(side_effects, "agent")]
    assert levels and max(levels) == 2
    assert details["budget"]["limits"]["max_depth"] == 3 and details["budget"]["use"]["depth"] == 3
    crossed = next(c for c in details["call_list"] if c["id"] == exc.call_id)
    assert crossed["function"] == "agent" and crossed["status"] == "failed"
    assert all(c["executions"] <= 1 for c in details["call_list"])
    # Nothing started after the run ended, and every body that ran was a counted execution.
    assert last_dispatch(state_dir, request.id) <= details["ended_at"]
    assert len(levels) <= details["calls"]["executions"]


def test_max_calls_stops_it_and_resume_with_a_raised_budget_reuses_finished_calls(
        state_dir, side_effects, show, cli) -> None:
    code, out, err = cli("run", f"{TARGET}:blocking_app", "--json", "--budget", "calls=8",
                         "--input", json.dumps({"log": str(side_effects), "levels": 3, "fanout": 2}))
    assert code == 1, err
    result = json.loads(out)
    assert result["status"] == "failed" and "BudgetExceeded" in result["error"]
    assert "max_calls=8" in result["error"] and "blocking_agent" in result["error"]
    run_id = result["run_id"]
    before = show(run_id)
    assert before["budget"]["limits"]["max_calls"] == 8 and before["budget"]["use"]["calls"] == 8
    ran = len(records(side_effects, "blocking"))
    assert ran <= 8 - 1  # the root application call records nothing
    assert before["calls"]["executions"] <= 8
    assert last_dispatch(state_dir, run_id) <= before["ended_at"]
    finished = {c["id"] for c in before["call_list"] if c["status"] in ("succeeded", "tail")}

    code, shown, _ = cli("show", run_id)
    assert "budget: calls 8/8" in shown

    code, out, err = cli("resume", run_id, "--json", "--budget", "calls=100")
    assert code == 0, err
    assert json.loads(out)["result"] == 15  # 1 + 2 + 4 + 8 agents
    after = show(run_id)
    assert after["budget"]["limits"]["max_calls"] == 100 and after["budget"]["use"]["calls"] == 16
    executions = {c["id"]: c["executions"] for c in after["call_list"]}
    assert all(executions[i] == 1 for i in finished)  # every finished call was reused
    # Only the calls that had not finished ran again (the stopped ones, and the one that crossed).
    agents = [c for c in after["call_list"] if c["function"] == "blocking_agent"]
    assert len(records(side_effects, "blocking")) == sum(c["executions"] for c in agents)
    assert all(c["executions"] <= 2 for c in agents)


def test_max_duration_stops_a_slow_run(state_dir, side_effects, show, cli, wait_until) -> None:
    code, out, err = cli("run", f"{TARGET}:slow_app", "--json", "--budget", "duration=3",
                         "--input", json.dumps({"log": str(side_effects), "seconds": 60}))
    assert code == 1, err
    result = json.loads(out)
    assert "BudgetExceeded" in result["error"] and "max_duration=3 s" in result["error"]
    details = show(result["run_id"])
    assert 3.0 <= details["budget"]["use"]["duration"] < 15
    assert details["budget"]["limits"]["max_duration"] == 3
    assert details["error"].startswith("BudgetExceeded") and details["duration"] < 15
    # The slow call (when its executor was up in time to start it) was stopped with the run.
    assert len(records(side_effects, "slow-start")) <= 1 and not records(side_effects, "slow-end")
    for pid in (int(r[0]) for r in records(side_effects, "slow-start")):
        wait_until(lambda pid=pid: not Path(f"/proc/{pid}").exists() or _zombie(pid), timeout=20,
                   what="the slow call's executor to be stopped")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.parametrize("budget", ["calls=x", "depth=-1", "tokens=5", "calls"])
def test_a_bad_budget_is_one_line_and_exit_2(state_dir, cli, budget: str) -> None:
    code, out, err = cli("run", f"{TARGET}:slow_app", "--budget", budget)
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and "bad budget" in err and "Traceback" not in err


def test_engine_yaml_budget_replaces_the_decorators(tmp_path: Path, state_dir, side_effects, show, cli) -> None:
    config = tmp_path / "engine.yaml"
    config.write_text("budget: {max_depth: 2, max_calls: 500}\n")
    code, out, err = cli("run", f"{TARGET}:agent_app", "--json", "--config", str(config),
                         "--input", json.dumps({"log": str(side_effects), "levels": 8, "fanout": 1}))
    assert code == 1, err
    details = show(json.loads(out)["run_id"])
    assert details["budget"]["limits"] == {"max_calls": 500, "max_depth": 2, "max_duration": None}
    assert "max_depth=2" in details["error"]
