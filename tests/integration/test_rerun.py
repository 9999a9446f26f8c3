"""`engine rerun RUN_ID --from FUNCTION FILE.py` and `POST /v1/runs/{id}/rerun`, on the process
backend with real executors and the real store.

Every test runs `rerun_app` (tests/integration/apps/app_rerun.py) once with VERSION "v1", then
reruns it with a copy of the file whose VERSION is "v2" (the code changed between the run and
the rerun), and counts the executions each function recorded during the rerun alone: what the
rerun reused never ran, what it executed ran once, with the new code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import APPS_DIR
from serverlib import ServerProcess, wait_for_lease_to_run_out
from test_engine_failures import checkpointed_count, kill9_engine

QUESTION = "q"
TOPICS = [f"{QUESTION}-{i}" for i in range(3)]
#: Executions of the first run: 1 root, 1 plan, 3 research, 6 lookup, 3 combine, 3 critique,
#: 1 synthesise.
FIRST = {"root": 1, "plan": 1, "research": 3, "lookup": 6, "combine": 3, "critique": 3, "synthesise": 1}


def version_2(tmp_path: Path, pause: float = 0.0) -> Path:
    """A copy of the app (with sidefx.py, which it imports) stamping its results "v2", its
    lookups sleeping `pause` × (i + 1)."""
    where = tmp_path / "v2"
    where.mkdir(exist_ok=True)
    shutil.copy(APPS_DIR / "sidefx.py", where / "sidefx.py")
    text = (APPS_DIR / "app_rerun.py").read_text()
    text = text.replace('VERSION = "v1"', 'VERSION = "v2"').replace("PAUSE = 0.0", f"PAUSE = {pause}")
    (where / "app_rerun.py").write_text(text)
    return where / "app_rerun.py"


def first_run(cli: Any, side_effects: Any) -> tuple[str, dict[str, Any]]:
    code, out, err = cli("run", f"{APPS_DIR / 'app_rerun.py'}:rerun_app", "--json",
                         "--input", json.dumps({"question": QUESTION, "log": str(side_effects)}))
    assert code == 0, err
    outcome = json.loads(out)
    assert outcome["result"]["answer"].startswith("v1 answer") and "(v1)" in outcome["result"]["answer"]
    assert Counter(line.split("|")[0] for line in side_effects.lines()) == FIRST
    return outcome["run_id"], outcome["result"]


def since(side_effects: Any, mark: int) -> Counter[str]:
    """Executions per function recorded after the first `mark` lines."""
    return Counter(line.split("|")[0] for line in side_effects.lines()[mark:])


def rerun(cli: Any, run_id: str, function: str, file: Path) -> dict[str, Any]:
    code, out, err = cli("rerun", run_id, "--from", function, str(file), "--json")
    assert code == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


def test_rerun_from_the_synthesis_reuses_the_research(cli, side_effects, show, tmp_path) -> None:
    """The function changed: only its call and the caller that waited for it (the root) run
    again, with the new code; every research call, lookup and critique is reused."""
    run_id, _ = first_run(cli, side_effects)
    mark = len(side_effects.lines())
    outcome = rerun(cli, run_id, "synthesise", version_2(tmp_path))
    assert outcome["status"] == "succeeded" and outcome["run_id"] != run_id
    answer = outcome["result"]["answer"]
    assert answer.startswith("v2 answer to q: ")  # the new synthesise...
    assert answer.count("(v1)") == 3  # ...over the reused research
    assert since(side_effects, mark) == {"root": 1, "synthesise": 1}

    info = show(outcome["run_id"])
    assert info["rerun_of"] == run_id and info["rerun_from"] == "synthesise"
    assert info["calls"]["executed"] == 2 and info["calls"]["reused"] == 16
    reused = Counter(c["function"] for c in info["call_list"] if c["reused"])
    assert reused == {"plan": 1, "research": 3, "lookup": 6, "combine": 3, "critique": 3}
    assert {c["function"] for c in info["call_list"] if not c["reused"]} == {"rerun_app", "synthesise"}
    text = cli("show", outcome["run_id"])
    assert f"rerun of {run_id} from synthesise: 2 calls executed, 16 reused" in text.stdout
    # The origin is untouched.
    assert show(run_id)["result"]["answer"].startswith("v1 answer")
    assert "rerun_of" in show(run_id) and show(run_id)["rerun_of"] is None


def test_rerun_from_a_mid_tree_function(cli, side_effects, tmp_path) -> None:
    """From `research`: its calls and all they created (lookups, combines) run again, and so do
    the calls that take their values (synthesise) and the root that waited for that; their
    siblings (plan, critique) are reused."""
    run_id, _ = first_run(cli, side_effects)
    mark = len(side_effects.lines())
    outcome = rerun(cli, run_id, "research", version_2(tmp_path))
    assert outcome["result"]["answer"].startswith("v2 answer") and outcome["result"]["answer"].count("(v2)") == 3
    assert since(side_effects, mark) == {"root": 1, "research": 3, "lookup": 6, "combine": 3, "synthesise": 1}


def test_a_tail_caller_gets_the_new_value_without_running(cli, side_effects, tmp_path) -> None:
    """From `combine`, which each research call returns as a tail call: the research calls do
    not run again (their value is their tail call's), but what takes their values does."""
    run_id, _ = first_run(cli, side_effects)
    mark = len(side_effects.lines())
    outcome = rerun(cli, run_id, "combine", version_2(tmp_path))
    assert outcome["result"]["answer"].count("(v2)") == 3
    assert since(side_effects, mark) == {"combine": 3, "synthesise": 1, "root": 1}


@pytest.mark.postgres
def test_rerun_on_postgresql(cli, side_effects, tmp_path, postgres_url) -> None:
    """The same rerun with the PostgreSQL store: its migration, the copied calls and state."""
    def on_postgres(*args: str) -> Any:
        return cli(*args, env={"ENGINE_STORE": postgres_url})

    run_id, _ = first_run(on_postgres, side_effects)
    mark = len(side_effects.lines())
    outcome = rerun(on_postgres, run_id, "synthesise", version_2(tmp_path))
    assert outcome["result"]["answer"].startswith("v2 answer") and outcome["result"]["answer"].count("(v1)") == 3
    assert since(side_effects, mark) == {"root": 1, "synthesise": 1}
    info = json.loads(on_postgres("show", outcome["run_id"], "--json").stdout)
    assert info["rerun_of"] == run_id and info["calls"]["reused"] == 16


def test_rerun_errors_are_one_line(cli, side_effects, tmp_path) -> None:
    run_id, _ = first_run(cli, side_effects)
    v2 = version_2(tmp_path)
    cases = [
        (("rerun", "no-such-run", "--from", "synthesise"), "no run 'no-such-run'"),
        (("rerun", run_id, "--from", "nothing", str(v2)), "defines no @function() named 'nothing'"),
        (("rerun", run_id, "--from", "research", f"{APPS_DIR / 'app_crash.py'}:crash_app"),
         "is a run of rerun_app, not of crash_app"),
        (("rerun", run_id), "the following arguments are required: --from"),
    ]
    for args, expected in cases:
        code, out, err = cli(*args)
        assert code == 2, (args, code, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert expected in err, err

    # A function of the application that this run never called.
    (tmp_path / "v2" / "app_rerun.py").write_text(
        v2.read_text() + "\n\n@function()\ndef unused(x: int) -> int:\n    return x\n")
    code, _, err = cli("rerun", run_id, "--from", "unused", str(v2))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"run {run_id} made no call of unused" in err, err


def test_rerun_of_a_running_run_is_refused_and_a_killed_rerun_resumes(
        cli, side_effects, state_dir, wait_until, tmp_path) -> None:
    """A rerun killed with -9 midway is continued by `engine resume`: no call checkpointed by the
    rerun (nor reused from its origin) executes again. While it runs, another rerun of it is
    refused in one line."""
    run_id, _ = first_run(cli, side_effects)
    mark = len(side_effects.lines())
    v2 = version_2(tmp_path, pause=3.0)  # lookups take 3 s (i = 0) and 6 s (i = 1)
    with open(tmp_path / "rerun.err", "w") as err:
        engine = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "rerun", run_id, "--from", "research", str(v2), "--json"],
            stdout=subprocess.DEVNULL, stderr=err, env=dict(os.environ))
    try:
        new_id = wait_until(lambda: newest_run(state_dir, other_than=run_id), timeout=60,
                            what="the rerun to start")
        code, _, err_text = cli("rerun", new_id, "--from", "research", str(v2))
        assert code == 2 and len(err_text.strip().splitlines()) == 1, err_text
        assert f"run {new_id} is still running: wait for it to end, or cancel it" in err_text
        # Some of the rerun's lookups checkpointed (the first run's 6 are there already), not all.
        wait_until(lambda: checkpointed_count(state_dir, "lookup") >= 6 + 2 or engine.poll() is not None,
                   timeout=60, what="the rerun's first lookups to be checkpointed")
        assert engine.poll() is None, (tmp_path / "rerun.err").read_text()
        kill9_engine(engine)
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()
    done_at_kill = checkpointed(state_dir, new_id)
    assert 2 <= len(done_at_kill["lookup"]) < 6, done_at_kill

    wait_for_lease_to_run_out(state_dir, new_id)
    code, out, err_text = cli("resume", new_id, "--json")
    assert code == 0, err_text
    assert json.loads(out)["result"]["answer"].count("(v2)") == 3

    ran = Counter(tuple(line.split("|")[:-1]) for line in side_effects.lines()[mark:])
    for topic, i in done_at_kill["lookup"]:
        assert ran[("lookup", topic, str(i))] == 1, (topic, i, ran)
    for topic in done_at_kill["research"]:  # handed off by tail call before the kill
        assert ran[("research", topic)] == 1, (topic, ran)
    counts = Counter(key[0] for key in ran.elements())
    assert counts["plan"] == counts["critique"] == 0  # reused from the origin, run or resumed
    assert counts["lookup"] <= 6 + (6 - len(done_at_kill["lookup"]))


def newest_run(state_dir: Path, other_than: str) -> str | None:
    """The newest run if it is not `other_than` (and running), else None."""
    from engine.store import open_store, store_url

    store = open_store(store_url(state_dir))
    try:
        row = store.list_runs(limit=1)[0]
    finally:
        store.close()
    return row.run_id if row.run_id != other_than and row.status == "running" else None


def checkpointed(state_dir: Path, run_id: str) -> dict[str, set[Any]]:
    """The calls the rerun `run_id` itself finished (not copied from its origin): lookups by
    (topic, i), research calls by topic."""
    from engine import wire
    from engine.store import open_store, store_url
    from engine.wire.v1 import engine_pb2 as pb

    store = open_store(store_url(state_dir))
    try:
        calls = [c for c in store.load_calls(run_id) if not c.reused and c.status in ("succeeded", "tail")]
    finally:
        store.close()

    def args(c: Any) -> list[Any]:
        return [wire.loads(a.value.data) for a in pb.FutureSpec.FromString(c.spec).arguments.args[:2]]

    return {"lookup": {tuple(args(c)) for c in calls if c.function == "lookup"},
            "research": {args(c)[0] for c in calls if c.function == "research"}}


def test_server_rerun_endpoint(tmp_path, side_effects) -> None:
    """`POST /v1/runs/{id}/rerun {"from": "synthesise"}` reruns a server's run on the latest
    deployed version: 202 with the new run, which records its origin and what it reused; a
    function the application does not define is 422, an unknown run 404."""
    server = ServerProcess(tmp_path / "state").start()
    try:
        server.deploy(APPS_DIR / "app_rerun.py")
        run_id = server.submit("rerun_app", {"question": QUESTION, "log": str(side_effects)})
        first = server.wait(run_id)
        assert first["status"] == "succeeded" and first["result"]["answer"].startswith("v1 answer")
        assert server.deploy(version_2(tmp_path))["applications"][0]["version"] == 2
        mark = len(side_effects.lines())

        status, body = server.request("POST", f"/v1/runs/{run_id}/rerun", {"from": "synthesise"})
        assert status == 202 and body["status"] == "queued" and body["run_id"] != run_id, body
        run = server.wait(body["run_id"])
        assert run["status"] == "succeeded" and run["version"] == 2
        assert run["result"]["answer"].startswith("v2 answer") and run["result"]["answer"].count("(v1)") == 3
        assert run["rerun_of"] == run_id and run["rerun_from"] == "synthesise"
        assert run["calls"]["reused"] == 16 and run["calls"]["executions"] == 2
        assert since(side_effects, mark) == {"root": 1, "synthesise": 1}
        nodes = server.ok("GET", f"/v1/runs/{body['run_id']}/dag")["nodes"]
        assert {n["function"] for n in nodes if not n["reused"]} == {"rerun_app", "synthesise"}

        status, body = server.request("POST", f"/v1/runs/{run_id}/rerun", {"from": "nothing"})
        assert status == 422 and "defines no @function() named 'nothing'" in body["error"], body
        status, body = server.request("POST", "/v1/runs/no-such-run/rerun", {"from": "synthesise"})
        assert status == 404, body
        status, body = server.request("POST", f"/v1/runs/{run_id}/rerun", {"function": "synthesise"})
        assert status == 422, body
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _log_env(side_effects: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINE_TEST_LOG", str(side_effects))
