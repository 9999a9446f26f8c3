"""`engine.signal`: a run waits for a person's approval durably, holding no executor, and the
approval — sent with `engine signal` against the state directory, or over HTTP to a server that
was killed and restarted meanwhile — completes it. Real engine processes, process executors."""

from __future__ import annotations

import json
import signal as signals
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from serverlib import ServerProcess, executors_of

import engine

APP = Path(__file__).resolve().parent / "apps" / "app_signals.py"
REPO = Path(__file__).resolve().parents[2]



@pytest.fixture
def config(tmp_path: Path) -> Path:
    """Idle executors go after 0.5 s, so that a waiting run is seen to hold none."""
    path = tmp_path / "engine.yaml"
    path.write_text("idle_timeout: 0.5\n")
    return path


@pytest.fixture
def engine_run(state_dir: Path, config: Path):
    """`engine run APP:FUNCTION --input JSON --json` in the background; killed at the end."""
    started: list[subprocess.Popen[str]] = []

    def start(function: str, data: Any) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "run", f"{APP}:{function}", "--input", json.dumps(data),
             "--json", "--config", str(config)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signals.SIGKILL)
            proc.wait(10)


def the_run(cli, wait_until) -> str:
    def one() -> str | None:
        code, out, _ = cli("runs", "--json")
        runs = json.loads(out) if code == 0 else []
        return runs[0]["run_id"] if runs else None

    return wait_until(one)  # type: ignore[no-any-return]


def finished(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, dict[str, Any], str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, json.loads(out.strip().splitlines()[-1]), err


def test_approval_sent_with_the_cli_completes_a_run_that_held_no_executor(
        cli, show, engine_run, side_effects, wait_until) -> None:
    proc = engine_run("review", {"topic": "bees", "log": str(side_effects)})
    run_id = the_run(cli, wait_until)
    info = wait_until(lambda: (i := show(run_id))["waiting"] and i)
    assert info["status"] == "running"  # the store's status: its driver holds it
    assert [w["name"] for w in info["waits"]] == ["approval"]
    assert side_effects.count("draft") == 1
    # Nothing executes while it waits: the draft's idle executor goes, and none starts for
    # publish (whose first executor would otherwise start while it waits for its inputs).
    wait_until(lambda: not executors_of(proc.pid), timeout=20)
    time.sleep(1.0)
    assert not executors_of(proc.pid) and proc.poll() is None
    code, out, err = cli("show", run_id)
    assert code == 0 and f"run {run_id}  review  waiting" in out, out
    assert "waiting for signal 'approval'" in out and f"engine signal {run_id} approval" in out

    code, out, err = cli("signal", run_id, "approval", "--data", '{"by": "ada", "ok": true}')
    assert code == 0, err
    code, result, err = finished(proc)
    assert code == 0, err
    assert result["result"] == {"text": "draft about bees", "approval": {"by": "ada", "ok": True}}
    assert side_effects.count("draft") == 1 and side_effects.count("publish") == 1
    info = show(run_id)
    assert info["waits"] == [] and not info["waiting"]
    assert [(s["name"], s["seq"]) for s in info["signals"]] == [("approval", 0)]


def test_a_signal_sent_before_its_future_exists_is_kept_and_a_second_is_refused(
        cli, show, engine_run, side_effects, wait_until, tmp_path) -> None:
    gate = tmp_path / "gate"
    proc = engine_run("gated_review", {"topic": "ants", "log": str(side_effects), "gate": str(gate)})
    run_id = the_run(cli, wait_until)
    wait_until(lambda: side_effects.count("draft") == 1)
    assert not any(c["kind"] == "signal" for c in show(run_id)["call_list"])  # no future of it yet

    code, out, err = cli("signal", run_id, "approval", "--data", '"yes"')
    assert code == 0, err
    code, out, err = cli("signal", run_id, "approval", "--data", '"no, wait"')
    assert code == 2 and "already has signal 'approval'" in err and "Traceback" not in err, err
    code, out, err = cli("signal", run_id, "bad/name")
    assert code == 2 and "signal name" in err, err

    gate.write_text("open")
    code, result, err = finished(proc)
    assert code == 0, err
    assert result["result"] == {"text": "draft about ants", "approval": "yes"}
    code, out, err = cli("signal", run_id, "approval")
    assert code == 2 and "already succeeded" in err, err


def test_repeatable_signals_are_taken_one_per_future_in_arrival_order(
        cli, show, engine_run, wait_until) -> None:
    proc = engine_run("collect", 2)
    run_id = the_run(cli, wait_until)
    # The name is repeatable once the run has declared it so (its futures exist).
    wait_until(lambda: len(show(run_id)["waits"]) == 2)
    for i in range(2):
        code, _, err = cli("signal", run_id, "msg", "--data", json.dumps(i))
        assert code == 0, err
    code, result, err = finished(proc)
    assert code == 0, err
    assert result["result"] == [0, 1], result  # each future took one, in the order they waited
    waits = [c["id"] for c in show(run_id)["call_list"] if c["kind"] == "signal"]
    assert [s["taken_by"] for s in show(run_id)["signals"]] == waits


def test_a_timeout_fails_the_wait_with_signal_timeout(state_dir, apps, side_effects) -> None:
    app = apps("app_signals")
    request = engine.run_local_application(app.review_with_timeout, "wasps", str(side_effects), 1.0)
    with pytest.raises(engine.SignalTimeout) as caught:
        request.output()
    assert isinstance(caught.value, engine.RequestFailed)
    assert "no signal 'approval' arrived within 1 s" in str(caught.value)
    assert side_effects.count("draft") == 1 and side_effects.count("publish") == 0


def test_approval_over_http_after_the_server_was_killed(state_dir, tmp_path, side_effects) -> None:
    server = ServerProcess(state_dir).start()
    try:
        server.deploy(APP)
        run_id = server.submit("review", {"topic": "moths", "log": str(side_effects)})
        deadline = time.monotonic() + 60
        while not (run := server.ok("GET", f"/v1/runs/{run_id}"))["waiting"]:
            assert time.monotonic() < deadline, run
            time.sleep(0.1)
        assert run["status"] == "running"
        assert [w["name"] for w in run["waits"]] == ["approval"]
        # The runs list and the batch read say so too (the dashboard's list shows `waiting`).
        listed = server.ok("GET", "/v1/runs")["runs"]
        assert [r["waiting"] for r in listed if r["run_id"] == run_id] == [True], listed
        assert server.ok("GET", f"/v1/runs?ids={run_id}")["runs"][0]["waiting"] is True
        server.kill9()
        server.start()
        status, sent = server.request("POST", f"/v1/runs/{run_id}/signals/approval", {"ok": True})
        assert status == 200 and sent == {"run_id": run_id, "name": "approval", "seq": 0}, sent
        status, refused = server.request("POST", f"/v1/runs/{run_id}/signals/approval", {"ok": False})
        assert status == 409 and "already has signal" in refused["error"], refused
        assert server.request("POST", "/v1/runs/nope/signals/approval", 1)[0] == 404
        run = server.wait(run_id, timeout=60)
        assert run["status"] == "succeeded", run
        assert run["result"] == {"text": "draft about moths", "approval": {"ok": True}}
        assert side_effects.count("draft") == 1 and side_effects.count("publish") == 1
        assert run["signals"][0]["name"] == "approval" and run["waits"] == []
        assert server.ok("GET", f"/v1/runs?ids={run_id}")["runs"][0]["waiting"] is False
    finally:
        server.stop()
