"""Failures on real executor processes: retries with backoff, RequestError, timeouts, a failing
branch with healthy siblings and `engine resume`, and resume after the engine is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from engine import FunctionError, FunctionTimeout, RequestError, RequestFailed, run_local_application


def executions(info: dict[str, Any]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for call in info["call_list"]:
        counts[call["function"]] += call["executions"]
    return counts


def only_call(info: dict[str, Any], function: str) -> dict[str, Any]:
    calls = [c for c in info["call_list"] if c["function"] == function]
    assert len(calls) == 1, calls
    return calls[0]


# --- retries -------------------------------------------------------------------------------------


def test_retries_back_off_until_success(apps, state_dir, side_effects, show) -> None:
    app = apps("app_failures")
    request = run_local_application(app.retry_app, str(side_effects), 2)
    assert request.output() == "ok"
    times = [float(f[0]) for f in side_effects.tagged("flaky")]
    assert len(times) == 3  # failed, failed, succeeded
    first_gap, second_gap = times[1] - times[0], times[2] - times[1]
    # Retries(initial_delay=0.1, delay_multiplier=5): waits 0.1 s, then 0.5 s.
    assert first_gap >= 0.1 and second_gap >= 0.5
    assert second_gap > first_gap
    flaky = only_call(show(request.id), "flaky")
    assert (flaky["status"], flaky["attempts"], flaky["executions"]) == ("succeeded", 3, 3)


def test_retries_exhausted_fail_the_run(apps, state_dir, side_effects, show) -> None:
    app = apps("app_failures")
    request = run_local_application(app.exhausted_app, str(side_effects))
    with pytest.raises(FunctionError, match="always fails") as info:
        request.output()
    assert info.value.function == "always_fails" and info.value.run_id == request.id
    assert "RuntimeError" in (info.value.traceback or "")
    assert len(side_effects.tagged("always_fails")) == 3  # 1 + max_retries=2
    call = only_call(show(request.id), "always_fails")
    assert (call["status"], call["attempts"]) == ("failed", 3)


def test_application_retries_are_the_default_policy(apps, state_dir, side_effects) -> None:
    app = apps("app_failures")
    assert run_local_application(app.app_default_retries, str(side_effects)).output() == (
        "second time lucky")
    assert len(side_effects.tagged("inherits")) == 2


def test_request_error_is_not_retried(apps, state_dir, side_effects, show) -> None:
    app = apps("app_failures")
    request = run_local_application(app.request_error_app, str(side_effects))
    with pytest.raises(RequestError, match="the input is unusable") as info:
        request.output()
    assert info.value.function == "refuses"
    assert len(side_effects.tagged("refuses")) == 1  # despite max_retries=3
    assert show(request.id)["status"] == "failed"


def test_request_error_propagates_through_callers_without_retries(apps, state_dir,
                                                                   side_effects) -> None:
    app = apps("app_failures")
    request = run_local_application(app.request_error_nested_app, str(side_effects))
    with pytest.raises(RequestError, match="the input is unusable"):
        request.output()
    # Neither the function that raised it nor its caller (both max_retries=3) ran again.
    assert len(side_effects.tagged("refuses")) == 1
    assert len(side_effects.tagged("caller")) == 1


# --- timeouts ------------------------------------------------------------------------------------


def test_timeout_fails_with_function_timeout(apps, state_dir, side_effects, show) -> None:
    app = apps("app_failures")
    started = time.monotonic()
    request = run_local_application(app.timeout_app, str(side_effects))
    elapsed = time.monotonic() - started
    with pytest.raises(FunctionTimeout, match="snail timed out after 1 s") as info:
        request.output()
    assert not isinstance(info.value, TimeoutError)
    assert info.value.function == "snail"
    assert elapsed < 20  # not the 30 s the function sleeps
    assert len(side_effects.tagged("snail")) == 1
    assert only_call(show(request.id), "snail")["status"] == "failed"


# --- a failing branch, then resume ---------------------------------------------------------------


def run_branches(app: Any, n: int, side_effects: Any, flag: Path) -> Any:
    flag.touch()
    request = run_local_application(app.branches, n, str(side_effects), str(flag))
    assert request.status == "failed"
    return request


def test_failing_branch_then_resume_reruns_only_what_failed(apps, state_dir, side_effects, cli,
                                                            show, tmp_path) -> None:
    app = apps("app_failures")
    n = 4
    request = run_branches(app, n, side_effects, tmp_path / "broken")
    with pytest.raises(FunctionError, match="fragile") as info:
        request.output()
    assert info.value.function == "fragile" and info.value.run_id == request.id
    assert [side_effects.count("healthy", str(i)) for i in range(n)] == [1] * n
    assert len(side_effects.tagged("join")) == 0  # its dependency failed: it never ran
    before = show(request.id)
    assert before["calls"]["failed"] >= 1
    assert all(c["status"] == "succeeded" for c in before["call_list"] if c["function"] == "healthy")

    (tmp_path / "broken").unlink()  # "fix" the failure
    code, out, err = cli("resume", request.id, "--json")
    assert code == 0, err
    assert json.loads(out) == {"run_id": request.id, "status": "succeeded",
                               "result": sum(range(n)) + 100, "error": None}
    # Only the failed call and its dependant ran; the siblings were reused.
    assert [side_effects.count("healthy", str(i)) for i in range(n)] == [1] * n
    assert len(side_effects.tagged("fragile")) == 2
    assert len(side_effects.tagged("join")) == 1
    after = show(request.id)
    assert after["status"] == "succeeded" and after["resumes"] == 1
    assert after["calls"]["reused"] >= n
    assert executions(after)["healthy"] == n

    # Resuming a succeeded run changes nothing and runs nothing.
    lines = len(side_effects.lines())
    code, out, err = cli("resume", request.id, "--json")
    assert code == 0 and json.loads(out)["result"] == sum(range(n)) + 100
    assert len(side_effects.lines()) == lines
    assert show(request.id)["calls"]["executions"] == after["calls"]["executions"]


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "BUG: resume re-executes a caller that had handed off by tail call when the tail call "
    "failed: Scheduler._propagate (engine/scheduler/scheduler.py, FAILED branch) calls "
    "_finish_call_failed on tail_parents, overwriting status 'tail' with 'failed' in the "
    "store; reset_unfinished/resume_run then treat it as unfinished and run it again"))
def test_resume_never_reexecutes_a_tail_caller(apps, state_dir, side_effects, cli, tmp_path) -> None:
    app = apps("app_failures")
    request = run_branches(app, 1, side_effects, tmp_path / "broken")
    assert len(side_effects.tagged("branches")) == 1
    (tmp_path / "broken").unlink()
    code, _, err = cli("resume", request.id, "--json")
    assert code == 0, err
    assert len(side_effects.tagged("branches")) == 1  # it returned a tail call: it is finished


# --- the engine killed mid-run -------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces: fields resume after its closing parenthesis.
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def call_argument(spec: bytes) -> Any:
    from engine import wire
    from engine.wire.v1 import engine_pb2 as pb

    return wire.loads(pb.FutureSpec.FromString(spec).arguments.args[0].value.data)


def test_resume_after_the_engine_is_killed(apps, state_dir, side_effects, cli, wait_until,
                                           tmp_path) -> None:
    from engine.store import open_store, store_url

    app_file = Path(apps("app_crash").__file__)
    n = 20
    out_path, err_path = tmp_path / "run.out", tmp_path / "run.err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        engine = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "run", f"{app_file}:crash_app", "--json",
             "--input", json.dumps({"n": n, "log": str(side_effects)})],
            stdout=out, stderr=err, env=dict(os.environ),
        )
    try:
        wait_until(lambda: len(side_effects.tagged("end")) >= 4 or engine.poll() is not None,
                   timeout=60, what="4 calls to finish")
        assert engine.poll() is None, err_path.read_text()
        # Freeze the engine so that it starts no executor while we collect them, then kill it
        # and every executor it started (they are in sessions of their own).
        os.kill(engine.pid, signal.SIGSTOP)
        executors = children_of(engine.pid)
        os.kill(engine.pid, signal.SIGKILL)
        engine.wait()
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()
    assert executors, "the engine had no executor processes"
    for pid in executors:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_until(lambda: not any(alive(p) for p in executors), timeout=10, what="executors to die")
    finished_at_kill = len(side_effects.tagged("end"))
    assert finished_at_kill < n, "every call finished before the kill: nothing was tested"

    store = open_store(store_url(state_dir))
    try:
        (run,) = store.list_runs()
        assert run.status == "running"  # nobody recorded an end: the engine just vanished
        checkpointed = {call_argument(c.spec) for c in store.load_calls(run.run_id)
                        if c.function == "work" and c.status == "succeeded"}
    finally:
        store.close()
    assert checkpointed, "no call was checkpointed before the kill"

    code, out_text, err_text = cli("resume", run.run_id, "--json")
    assert code == 0, err_text
    assert json.loads(out_text) == {"run_id": run.run_id, "status": "succeeded",
                                    "result": sum(i * i for i in range(n)), "error": None}

    starts = Counter(int(f[0]) for f in side_effects.tagged("start"))
    ends = Counter(int(f[0]) for f in side_effects.tagged("end"))
    assert set(ends) == set(range(n))
    for i in checkpointed:  # a checkpointed call never runs again
        assert starts[i] == 1, f"work({i}) was checkpointed but ran {starts[i]} times"
    rerun = sum(starts.values()) - n
    assert rerun <= n - len(checkpointed)
    assert len(side_effects.tagged("root")) == 1  # the root had handed off by tail call

    code, out_text, err_text = cli("show", run.run_id, "--json")
    assert code == 0, err_text
    info = json.loads(out_text)
    assert info["status"] == "succeeded" and info["resumes"] == 1
    assert info["calls"]["reused"] >= len(checkpointed) > 0
    assert info["calls"]["executions"] == sum(starts.values()) + 2  # + root + gather
