"""A call's attempt on the fake backend (`tests/unit/fakebackend.py`) without a task per call:
`Dispatcher._send_call` sends it and its response, timeout, executor loss or cancellation comes
back as a callback on the response's future (`_answered`); only an attempt without a usable
answer continues in a task (`_conclude_slow`). And the store writes a call dispatched before its
row was sent with that row's INSERT (`Store.count_execution`).

What each test checks is read from the store's committed rows, or from the fake executors.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from fakebackend import FakeEngine, Fn, call, drive

from engine.sdk.retries import Retries

FANOUT = 200


def test_a_fan_out_in_flight_holds_no_task_per_call(tmp_path: Path) -> None:
    """Two hundred calls running at once: the loop's tasks do not grow with them, and every
    call still gets its own answer."""
    works = [call("work", i, id=f"w{i}") for i in range(FANOUT)]

    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": lambda _: call("total", *works, id="total"),
                                         "work": Fn(None, concurrency=FANOUT, max_containers=1),
                                         "total": lambda c: sum(c.args)}) as eng:
            run = eng.submit()
            await eng.until(lambda: len(eng.backend.running_of("work")) == FANOUT, "every work call running")
            tasks = len(asyncio.all_tasks())
            assert tasks < FANOUT // 4, f"{tasks} tasks for {FANOUT} calls in flight"
            for held in eng.backend.running_of("work"):
                held.answer(held.arg * 2)
            await eng.finished(run)
            assert eng.result(run) == sum(i * 2 for i in range(FANOUT))
            rows = {r.call_id: r for r in eng.reader.load_calls(run.run_id)}
            assert all(rows[f"w{i}"].status == "succeeded" and rows[f"w{i}"].executions == 1
                       for i in range(FANOUT))

    drive(scenario)


def test_a_call_past_its_timeout_fails_its_executor_is_replaced_and_a_late_answer_is_ignored(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": lambda _: call("slow", 1, id="slow"),
                                         "slow": Fn(None, timeout=0.05, retries=Retries(max_retries=1,
                                                                                        initial_delay=0))}) as eng:
            run = eng.submit()
            await eng.until(lambda: len(eng.backend.calls_of("slow")) == 2, "the retry after the timeout")
            first, second = eng.backend.calls_of("slow")
            await eng.until(lambda: first.executor.stopped, "the timed-out call's executor to stop")
            assert second.executor is not first.executor
            first.answer("too late")  # its executor was stopped: nothing reads this any more
            row = await eng.finished(run)
            assert row.status == "failed"
            slow = eng.stored(run, "slow")
            assert slow is not None and slow.status == "failed" and slow.error_kind == "timeout"
            assert slow.attempts == 2 and slow.executions == 2
            assert "timed out after 0.05 s" in (slow.error_message or "")

    drive(scenario)


def test_an_executor_that_dies_mid_call_fails_the_attempt_and_the_retry_runs_elsewhere(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": lambda _: call("work", 3, id="w"),
                                         "work": Fn(None, retries=Retries(max_retries=1, initial_delay=0))}) as eng:
            run = eng.submit()
            await eng.until(lambda: eng.backend.running_of("work"), "the call running")
            first = eng.backend.running_of("work")[0]
            first.executor.kill()
            await eng.until(lambda: len(eng.backend.calls_of("work")) == 2, "the retry")
            second = eng.backend.calls_of("work")[1]
            assert second.executor is not first.executor
            second.answer(6)
            await eng.finished(run)
            assert eng.result(run) == 6
            attempts = eng.reader.failed_attempts(run.run_id)
            assert [(a.call_id, a.error_kind) for a in attempts] == [("w", "executor_lost")]

    drive(scenario)


def test_a_cancelled_run_drops_the_answer_of_a_call_that_was_running(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": lambda _: call("work", 1, id="w"), "work": None}) as eng:
            run = eng.submit()
            await eng.until(lambda: eng.backend.running_of("work"), "the call running")
            held = eng.backend.running_of("work")[0]
            eng.scheduler.cancel_run(run.run_id, "stopped by the test")
            held.answer(2)
            row = await eng.finished(run)
            assert row.status == "cancelled"
            await eng.until(lambda: held.executor.stopped, "its executor to stop")
            await asyncio.sleep(0.01)
            assert eng.stored_status(run, "w") == "cancelled"
            assert eng.scheduler.runs[run.run_id].calls["w"].task is None

    drive(scenario)
