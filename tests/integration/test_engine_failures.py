"""Failures on real executor processes: retries with backoff, RequestError, timeouts, a failing
branch with healthy siblings and `engine resume`, and resume after the engine is killed."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from serverlib import executors_of, lease_of, poll, wait_for_lease_to_run_out

from engine import FunctionError, FunctionTimeout, RequestError, run_local_application


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
    # Retries(initial_delay=0.1, delay_multiplier=8): waits 0.1 s, then 0.8 s.
    assert first_gap >= 0.1 and second_gap >= 0.8
    assert second_gap > first_gap
    flaky = only_call(show(request.id), "flaky")
    assert (flaky["status"], flaky["attempts"], flaky["executions"]) == ("succeeded", 3, 3)
    # What each attempt printed is kept, under its attempt number.
    from engine.store import open_store, store_url

    store = open_store(store_url(state_dir))
    try:
        logs = [(attempt, text) for _, fn, attempt, text in store.logs(request.id) if fn == "flaky"]
    finally:
        store.close()
    assert logs == [(n, f"flaky attempt {n}\n") for n in (1, 2, 3)]


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


def test_a_caught_request_error_still_fails_the_request(apps, state_dir, side_effects, show,
                                                       wait_until) -> None:
    app = apps("app_failures")
    began = time.monotonic()
    request = run_local_application(app.request_error_caught_app, str(side_effects))
    with pytest.raises(RequestError, match="the input is unusable"):
        request.output()
    assert time.monotonic() - began < 30  # the sibling's 60 s sleep was cut short
    # ...and its executor, stopped as the run ended, did not outlive the engine.
    assert executors_of(os.getpid()) == []
    info = show(request.id)
    assert info["status"] == "failed"
    dawdles = only_call(info, "dawdles")
    assert dawdles["status"] == "cancelled"
    assert side_effects.count("dawdled") == 0
    # The root had caught the error when the run ended: what it did next did not count.
    assert only_call(info, "request_error_caught_app")["status"] in ("cancelled", "failed")


# --- when one branch fails for good --------------------------------------------------------------


def test_on_failure_finish_lets_independent_branches_finish_and_resume_reruns_only_the_failed_one(
        apps, state_dir, side_effects, show, cli, tmp_path) -> None:
    app = apps("app_on_failure")
    flag = tmp_path / "fail"
    flag.touch()
    n, fail = 5, 0
    request = run_local_application(app.finish_app, n, str(side_effects), fail, str(flag))
    with pytest.raises(FunctionError, match="branch 0 failed"):
        request.output()
    # Every sibling ran to its end and was checkpointed before the run failed.
    assert sorted(int(f[0]) for f in side_effects.tagged("end")) == [1, 2, 3, 4]
    info = show(request.id)
    assert info["status"] == "failed"
    branches = [c for c in info["call_list"] if c["function"] == "branch"]
    assert sorted(c["status"] for c in branches) == ["failed"] + ["succeeded"] * 4

    flag.unlink()
    code, out, err = cli("resume", request.id, "--json")
    assert code == 0, err
    assert json.loads(out)["result"] == sum(range(n))
    starts = Counter(int(f[0]) for f in side_effects.tagged("start"))
    assert starts == {0: 2, 1: 1, 2: 1, 3: 1, 4: 1}  # only the failed branch ran again


def test_on_failure_cancel_stops_the_siblings_at_once(apps, state_dir, side_effects, show,
                                                      tmp_path) -> None:
    app = apps("app_on_failure")
    flag = tmp_path / "fail"
    flag.touch()
    request = run_local_application(app.cancel_app, 5, str(side_effects), 0, str(flag))
    with pytest.raises(FunctionError, match="branch 0 failed"):
        request.output()
    info = show(request.id)
    branches = [c for c in info["call_list"] if c["function"] == "branch"]
    assert sorted(c["status"] for c in branches) == ["cancelled"] * 4 + ["failed"]
    assert side_effects.tagged("end") == []  # none of the siblings got to finish its work


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


def kill9_engine(engine: subprocess.Popen[Any]) -> list[int]:
    """kill -9 an `engine run`/`resume` process now, and every executor process it started
    (each in a session of its own, they would outlive it for the orphan grace). The engine is
    frozen first, so that it starts none while they are listed. Returns their pids, all dead."""
    os.kill(engine.pid, signal.SIGSTOP)
    executors = children_of(engine.pid)
    os.kill(engine.pid, signal.SIGKILL)
    engine.wait()
    for pid in executors:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    poll(lambda: not any(alive(p) for p in executors), 10, what="executors to die")
    return executors


@contextlib.contextmanager
def engine_in_background(args: list[str], tmp_path: Path,
                         env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[Any]]:
    """`engine ARGS` in a subprocess, its stdout and stderr in tmp_path's run.out and run.err (no
    pipe to fill); killed on the way out if it is still running."""
    with open(tmp_path / "run.out", "w") as out, open(tmp_path / "run.err", "w") as err:
        engine = subprocess.Popen([sys.executable, "-m", "engine.cli", *args], stdout=out, stderr=err,
                                  env=dict(os.environ) if env is None else env)
    try:
        yield engine
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()


def kill9_when(engine: subprocess.Popen[Any], ready: Callable[[], bool], what: str, tmp_path: Path,
               timeout: float = 120) -> None:
    """Wait until `ready()` holds while the engine still runs (its run.err is the failure's message
    if it ended first), then kill -9 it and its executors."""
    wait_until_engine(engine, ready, what, tmp_path, timeout)
    kill9_engine(engine)


def wait_until_engine(engine: subprocess.Popen[Any], ready: Callable[[], bool], what: str,
                      tmp_path: Path, timeout: float = 120) -> None:
    """Wait until `ready()` holds; fail with the engine's stderr if it ended first."""
    poll(lambda: ready() or engine.poll() is not None, timeout, what=what)
    assert engine.poll() is None, f"the engine ended before {what}: " + (tmp_path / "run.err").read_text()


def call_argument(spec: bytes) -> Any:
    from engine import wire
    from engine.wire.v1 import engine_pb2 as pb

    return wire.loads(pb.FutureSpec.FromString(spec).arguments.args[0].value.data)


def start_crash_run(app_file: Path, n: int, side_effects: Any, tmp_path: Path,
                    step: float = 0.12) -> subprocess.Popen:
    """`engine run --json` of app_crash in a subprocess (stdout/stderr to files: no pipe to fill)."""
    with open(tmp_path / "run.out", "w") as out, open(tmp_path / "run.err", "w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "run", f"{app_file}:crash_app", "--json",
             "--input", json.dumps({"n": n, "log": str(side_effects), "step": step})],
            stdout=out, stderr=err, env=dict(os.environ),
        )


def checkpointed_count(state_dir: Path, function: str = "work") -> int:
    """Calls of `function` the store holds as succeeded (read-only: it observes, never writes)."""
    db = state_dir / "engine.db"
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute("SELECT count(*) FROM calls WHERE function = ? AND status = 'succeeded'",
                            (function,)).fetchone()[0]
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0
    finally:
        conn.close()


def wait_for_some_calls(engine: subprocess.Popen, state_dir: Path, wait_until: Any,
                        tmp_path: Path) -> None:
    """Until a few calls are checkpointed (so that some finished work exists to be reused)."""
    wait_until(lambda: checkpointed_count(state_dir) >= 3 or engine.poll() is not None,
               timeout=60, what="3 calls to be checkpointed")
    assert engine.poll() is None, (tmp_path / "run.err").read_text()


def checkpointed_work(state_dir: Path) -> tuple[Any, set[int]]:
    """The run, and the arguments of the `work` calls the store holds as succeeded."""
    from engine.store import open_store, store_url

    store = open_store(store_url(state_dir))
    try:
        (run,) = store.list_runs()
        done = {call_argument(c.spec) for c in store.load_calls(run.run_id)
                if c.function == "work" and c.status == "succeeded"}
    finally:
        store.close()
    return run, done


def test_resume_refuses_while_the_lease_is_live_and_takes_over_after_kill_9(
        apps, state_dir, side_effects, cli, wait_until, tmp_path) -> None:
    """`engine resume` of a run another live process drives is one clear line naming the owner
    and when its lease runs out; after that process is killed, resume works once the lease has
    run out — whatever its pid (a zombie, or reused) says."""
    app_file = Path(apps("app_lease").__file__)
    ttl = 8  # s: long enough that the refused `engine resume` below starts, even on a loaded
    # machine, before the killed engine's last renewal runs out
    with open(tmp_path / "run.err", "w") as err:
        engine = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "run", f"{app_file}:lease_app", "--json",
             "--input", json.dumps({"log": str(side_effects), "n": 2})],
            stdout=subprocess.DEVNULL, stderr=err, env=dict(os.environ, ENGINE_LEASE_TTL=str(ttl)))
    try:
        wait_until(lambda: side_effects.count("start", "0"), timeout=60, what="the first call to start")
        run, _ = checkpointed_work(state_dir)
        lease = lease_of(state_dir, run.run_id)
        assert lease.live and lease.owner and str(engine.pid) in lease.owner

        code, out, err_text = cli("resume", run.run_id)
        assert code == 2, (code, out, err_text)
        lines = err_text.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err_text, err_text
        assert f"is being driven by {lease.owner}" in lines[0] and "lease runs out at" in lines[0]

        shown = cli("show", run.run_id)
        assert shown.code == 0 and f"driven by {lease.owner}" in shown.stdout, shown
        assert json.loads(cli("show", run.run_id, "--json").stdout)["lease"]["owner"] == lease.owner

        # The engine renews it every ttl / 5: 3 s later it has lost less than those 3 s (at
        # least ttl - ttl / 5 is left, and it had at most ttl).
        left = lease_of(state_dir, run.run_id).expires_in
        time.sleep(3)
        renewed = lease_of(state_dir, run.run_id).expires_in
        assert renewed is not None and left is not None and renewed > left - 2.5, (left, renewed)
        engine.kill()  # kill -9; the killed process stays a zombie until reaped
        # The dead engine's lease runs out at most one ttl after the kill: the store's own
        # expiry, read after the kill, not a stopwatch.
        left = lease_of(state_dir, run.run_id).expires_in
        assert left is not None and 0 < left <= ttl, left
        assert cli("resume", run.run_id).code == 2  # its lease still holds, zombie or not
        wait_for_lease_to_run_out(state_dir, run.run_id)
        shown = cli("show", run.run_id)
        assert f"continue it with `engine resume {run.run_id}`" in shown.stdout, shown
    finally:
        engine.kill()
        engine.wait()
    Path(str(side_effects) + ".go").touch()
    code, out, err_text = cli("resume", run.run_id, "--json")
    assert code == 0, err_text
    assert json.loads(out)["result"] == 0 + 1
    assert side_effects.count("end", "0") == 1 and side_effects.count("end", "1") == 1


def test_resume_after_the_engine_is_killed(apps, state_dir, side_effects, cli, wait_until,
                                           tmp_path) -> None:
    app_file = Path(apps("app_crash").__file__)
    n = 20
    engine = start_crash_run(app_file, n, side_effects, tmp_path)
    try:
        wait_for_some_calls(engine, state_dir, wait_until, tmp_path)
        executors = kill9_engine(engine)
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()
    assert executors, "the engine had no executor processes"
    finished_at_kill = len(side_effects.tagged("end"))
    assert finished_at_kill < n, "every call finished before the kill: nothing was tested"

    run, checkpointed = checkpointed_work(state_dir)
    assert run.status == "running"  # nobody recorded an end: the engine just vanished
    assert checkpointed, "no call was checkpointed before the kill"

    wait_for_lease_to_run_out(state_dir, run.run_id)
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
    # The store counts executions (+ root + gather); one begun in the instant before the kill
    # may not have been committed, never the other way round.
    assert n + 2 <= info["calls"]["executions"] <= sum(starts.values()) + 2


def test_ctrl_c_cancels_the_run_and_resume_finishes_it(apps, state_dir, side_effects, cli,
                                                       wait_until, tmp_path) -> None:
    app_file = Path(apps("app_crash").__file__)
    n = 12
    engine = start_crash_run(app_file, n, side_effects, tmp_path, step=0.25)
    try:
        wait_for_some_calls(engine, state_dir, wait_until, tmp_path)
        # While this engine drives the run, nobody else may resume it.
        run, _ = checkpointed_work(state_dir)
        one_line_error = cli("resume", run.run_id)
        assert one_line_error.code == 2, one_line_error
        assert "is being driven by" in one_line_error.stderr
        assert len(one_line_error.stderr.strip().splitlines()) == 1
        assert engine.poll() is None, "the run ended before the test could interrupt it"
        executors = children_of(engine.pid)
        engine.send_signal(signal.SIGINT)
        code = engine.wait(timeout=30)
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()
    err = (tmp_path / "run.err").read_text()
    assert code == 130, err
    assert "engine resume" in err and "Traceback" not in err
    assert executors
    # The engine stopped its executors before exiting.
    wait_until(lambda: not any(alive(p) for p in executors), timeout=10,
               what="the executors of the interrupted engine to stop")

    run, checkpointed = checkpointed_work(state_dir)
    assert run.status == "cancelled" and run.owner is None
    assert checkpointed
    code, out, err = cli("resume", run.run_id, "--json")
    assert code == 0, err
    assert json.loads(out)["result"] == sum(i * i for i in range(n))
    starts = Counter(int(f[0]) for f in side_effects.tagged("start"))
    for i in checkpointed:
        assert starts[i] == 1, f"work({i}) was checkpointed but ran {starts[i]} times"
    assert set(starts) == set(range(n))


def test_ctrl_c_resume_never_reexecutes_the_tail_caller(apps, state_dir, side_effects, cli,
                                                        wait_until, tmp_path) -> None:
    engine = start_crash_run(Path(apps("app_crash").__file__), 8, side_effects, tmp_path,
                             step=0.25)
    try:
        wait_for_some_calls(engine, state_dir, wait_until, tmp_path)
        engine.send_signal(signal.SIGINT)
        assert engine.wait(timeout=30) == 130
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()
    run, _ = checkpointed_work(state_dir)
    code, _, err = cli("resume", run.run_id, "--json")
    assert code == 0, err
    assert len(side_effects.tagged("root")) == 1


# --- executors that die, parents that fail after their children ---------------------------------


def test_lost_executor_is_retried_on_a_new_one(apps, state_dir, side_effects, show) -> None:
    app = apps("app_failures")
    request = run_local_application(app.executor_lost_app, str(side_effects))
    pid = request.output()
    attempts = side_effects.tagged("dies_once")
    assert len(attempts) == 2
    first_pid, second_pid = int(attempts[0][0]), int(attempts[1][0])
    assert second_pid == pid and first_pid != second_pid
    call = only_call(show(request.id), "dies_once")
    assert (call["status"], call["attempts"]) == ("succeeded", 2)


def test_lost_executor_without_retries_fails_with_executor_lost(apps, state_dir,
                                                                side_effects) -> None:
    from engine import ExecutorLost

    app = apps("app_failures")
    request = run_local_application(app.executor_lost_fatal_app, str(side_effects))
    with pytest.raises(ExecutorLost, match="always_dies") as info:
        request.output()
    assert "exit code 4" in str(info.value)
    assert len(side_effects.tagged("always_dies")) == 1


def test_a_retried_parent_reuses_its_finished_children(apps, state_dir, side_effects,
                                                       show) -> None:
    app = apps("app_failures")
    request = run_local_application(app.parent_retry_app, str(side_effects))
    assert request.output() == 3
    assert len(side_effects.tagged("parent")) == 2
    assert [side_effects.count("healthy", str(i)) for i in (1, 2)] == [1, 1]
    assert executions(show(request.id))["healthy"] == 2


def test_resume_reruns_a_blocking_parent_but_reuses_its_children(apps, state_dir, side_effects,
                                                                 cli, show, tmp_path) -> None:
    app = apps("app_failures")
    flag = tmp_path / "broken"
    flag.touch()
    request = run_local_application(app.blocking_parent, str(side_effects), str(flag))
    with pytest.raises(FunctionError, match="flag file"):
        request.output()
    flag.unlink()
    code, out, err = cli("resume", request.id, "--json")
    assert code == 0, err
    assert json.loads(out)["result"] == (0 + 1 + 2) + (0 + 1 + 4)
    assert len(side_effects.tagged("blocking_parent")) == 2  # it failed: it runs again...
    assert [side_effects.count("healthy", str(i)) for i in range(3)] == [1, 1, 1]  # ...alone
    info = show(request.id)
    assert executions(info)["healthy_square"] == 3
    assert info["calls"]["reused"] >= 6
    # The progress line counts each checkpoint once (3 healthy, the map and its 3 squares),
    # though the re-executed parent asked for each of them again, as `engine show` does.
    assert re.findall(r"reused (\d+)", err)[-1] == "7" == str(info["calls"]["reused"]), err


def test_large_values_travel_and_are_checkpointed_as_blobs(apps, state_dir, show) -> None:
    app = apps("app_failures")
    size = 300_000
    request = run_local_application(app.big_values, size)
    out = request.output()
    assert out["length"] == size and out["text"] == "x" * size
    blobs = [p for p in (state_dir / "blobs").rglob("*") if p.is_file()]
    assert blobs, "values over 64 KiB are stored as blob files"
    assert show(request.id)["status"] == "succeeded"


def test_resume_uses_the_arguments_the_rerun_parent_passes(apps, state_dir, side_effects, cli,
                                                           tmp_path) -> None:
    app = apps("app_failures")
    value = tmp_path / "value.txt"
    value.write_text("bad")
    request = run_local_application(app.reads_its_input, str(value), str(side_effects))
    with pytest.raises(FunctionError, match="bad value"):
        request.output()
    value.write_text("good")  # the user fixes the input the parent reads
    code, out, err = cli("resume", request.id, "--json")
    assert side_effects.count("check_value", "bad") == 1  # never again with the stale value
    assert code == 0, out
    assert json.loads(out)["result"] == "good!"
