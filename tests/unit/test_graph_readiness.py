"""Graph readiness on the fake backend (`tests/unit/fakebackend.py`): when a call may start,
what a tail call's caller becomes, what a failure does to the calls that depend on it,
cancellation, budgets and signals (docs/state-machine.md; `Scheduler._link_dependencies`,
`_propagate`, `_expand`, `_tail_call`, `cancel_run`, `budgets.RunBudget.admit`,
`_wait_for_signal`).

A call's state is read from the store's committed rows (`FakeEngine.stored`): the scheduler
acts on a state only once it is committed, so a row that says `succeeded` means the calls
waiting on it have been released — or, if they are still `pending`, will not be.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fakebackend import FakeCall, FakeEngine, Fn, call, drive, echo, map_, reduce_, signal

from engine.errors import BudgetExceeded, FunctionError, RequestCancelled, RequestError
from engine.scheduler.budgets import Budget, BudgetRefused
from engine.scheduler.signals import send_signal
from engine.sdk.retries import Retries
from engine.wire.v1 import engine_pb2 as pb


def test_a_call_starts_only_when_every_future_in_its_arguments_has_a_value(tmp_path: Path) -> None:
    """Futures anywhere in the arguments — nested lists and tuples, keyword arguments — are
    dependencies; the call receives their values in the same shapes."""
    a, b, c, d = (call("work", n, id=f"w{n}") for n in (1, 2, 3, 4))
    joined = call("join", a, [b, (c, "plain")], key=d, id="join")

    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": lambda _: joined, "work": None, "join": echo}) as eng:
            run = eng.submit()
            await eng.until(lambda: len(eng.backend.running_of("work")) == 4, "the four inputs running")
            # Every input but the one deepest in the arguments (inside a tuple inside a list).
            for held in eng.backend.running_of("work"):
                if held.arg != 3:
                    held.answer(held.arg * 10)
            await eng.until(lambda: all(eng.stored_status(run, i) == "succeeded" for i in ("w1", "w2", "w4")),
                            "three inputs committed")
            assert eng.stored_status(run, "join") == "pending"
            assert not eng.backend.calls_of("join")
            eng.backend.running_of("work")[0].answer(30)
            await eng.finished(run)
            assert eng.result(run) == ((10, [20, (30, "plain")]), {"key": 40})
            assert len(eng.backend.calls_of("join")) == 1

    drive(scenario)


def test_map_and_reduce_wait_for_a_future_list_then_run_one_call_per_item(tmp_path: Path) -> None:
    numbers = call("numbers", id="numbers")
    doubled = map_("double", numbers, id="doubled")
    total = reduce_("add", doubled, 100, id="total")
    mixed = map_("double", [call("numbers1", id="one"), 5], id="mixed")

    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": lambda _: call("pair", total, mixed), "numbers": None,
                                         "numbers1": lambda _: 1, "double": lambda c: 2 * c.arg,
                                         "add": lambda c: c.args[0] + c.args[1], "pair": echo}) as eng:
            run = eng.submit()
            await eng.until(lambda: eng.stored_status(run, "mixed") == "succeeded", "the mixed map")
            # The map over `numbers` has no items before `numbers` has its value.
            assert eng.stored_status(run, "doubled") == "pending"
            assert sorted(c.arg for c in eng.backend.calls_of("double")) == [1, 5]
            eng.backend.running_of("numbers")[0].answer([1, 2, 3])
            await eng.finished(run)
            assert eng.result(run) == ((100 + 2 + 4 + 6, [2, 10]), {})
            assert sorted(c.arg for c in eng.backend.calls_of("double")) == [1, 1, 2, 3, 5]
            # A left fold: one call per item, each taking the previous one's value.
            assert [tuple(c.args) for c in eng.backend.calls_of("add")] == [(100, 2), (102, 4), (106, 6)]

    drive(scenario)


def test_a_tail_call_gives_its_caller_the_target_value(tmp_path: Path) -> None:
    """A chain of tail calls: every caller ends `succeeded` with the last call's value, and
    runs once."""

    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": lambda c: call("step", 3, id="s3"),
                                         "step": lambda c: call("step", c.arg - 1, id=f"s{c.arg - 1}")
                                         if c.arg > 1 else "bottom"}) as eng:
            run = eng.submit()
            await eng.finished(run)
            assert eng.result(run) == "bottom"
            for call_id in (run.root_id, "s3", "s2", "s1"):
                row = eng.stored(run, call_id)
                assert row is not None and row.status == "succeeded" and row.executions == 1
            assert len(eng.backend.received) == 4

    drive(scenario)


def test_a_tail_call_to_a_future_that_already_finished_ends_the_caller_at_once(tmp_path: Path) -> None:
    async def main(c: FakeCall) -> object:
        done = call("work", 5, id="done")
        await c.submit(done)
        assert (await c.wait(done)) == {"done": 50}
        return done  # already has its value

    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": main, "work": lambda c: c.arg * 10}) as eng:
            run = eng.submit()
            await eng.finished(run)
            assert eng.result(run) == 50
            assert len(eng.backend.calls_of("work")) == 1

    drive(scenario)


def test_a_failed_dependency_fails_its_dependants_with_its_error(tmp_path: Path) -> None:
    """`join` never runs; it fails with `bad`'s error, and so does the run — but only once
    `slow`, which does not depend on the failure, has finished and been checkpointed."""

    def bad(c: FakeCall) -> None:
        raise ValueError("bad input 7")

    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": lambda _: call("join", call("bad", id="bad"),
                                                                call("slow", id="slow"), id="join"),
                                         "bad": bad, "slow": None, "join": echo}) as eng:
            run = eng.submit()
            await eng.until(lambda: eng.stored_status(run, "join") == "failed", "join to fail")
            join = eng.stored(run, "join")
            assert join is not None and join.error_kind == "dependency_failed"
            assert join.error_message == "bad input 7" and join.failure is not None
            assert pb.Failure.FromString(join.failure).type_name == "ValueError"
            assert not run.done.is_set()
            eng.backend.running_of("slow")[0].answer("kept")
            row = await eng.finished(run)
            assert row.status == "failed"
            assert eng.stored_status(run, "slow") == "succeeded"
            assert not eng.backend.calls_of("join")
            with pytest.raises(FunctionError, match="bad input 7") as raised:
                eng.result(run)
            assert isinstance(raised.value.__cause__, ValueError)

    drive(scenario)


def test_a_dependant_waiting_on_a_failure_it_does_not_see_yet_fails_when_it_does(tmp_path: Path) -> None:
    """A call created after its dependency failed fails at once, without running."""

    def bad(c: FakeCall) -> None:
        raise ValueError("no")

    async def main(c: FakeCall) -> object:
        failing = call("bad", id="bad")
        await c.submit(failing)
        outcome = await c.wait(failing)
        assert isinstance(outcome["bad"], FunctionError)
        return call("join", failing, id="join")

    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": main, "bad": bad, "join": echo}) as eng:
            run = eng.submit()
            await eng.finished(run)
            join = eng.stored(run, "join")
            assert join is not None and join.status == "failed" and join.error_kind == "dependency_failed"
            assert not eng.backend.calls_of("join")

    drive(scenario)


def test_a_retried_dependency_releases_its_dependants_once(tmp_path: Path) -> None:
    attempts: list[int] = []

    def flaky(c: FakeCall) -> int:
        attempts.append(c.attempt)
        if c.attempt < 3:
            raise ConnectionError("try again")
        return 7

    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": lambda _: call("join", call("flaky", id="flaky")),
                                         "flaky": Fn(flaky, retries=Retries(max_retries=2, initial_delay=0)),
                                         "join": echo}) as eng:
            run = eng.submit()
            await eng.finished(run)
            assert eng.result(run) == 7
            assert attempts == [1, 2, 3]
            assert len(eng.backend.calls_of("join")) == 1
            assert [a.attempt for a in eng.reader.failed_attempts(run.run_id)] == [1, 2]

    drive(scenario)


def test_a_request_error_fails_the_run_at_once_and_stops_the_rest(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": lambda _: call("join", call("refuse", id="refuse"),
                                                                call("slow", id="slow")),
                                         "refuse": Fn(None, retries=Retries(max_retries=3, initial_delay=0)),
                                         "slow": None, "join": echo}) as eng:
            run = eng.submit()
            await eng.until(lambda: eng.backend.running_of("slow") and eng.backend.running_of("refuse"),
                            "both calls to run")
            slow_executor = eng.backend.running_of("slow")[0].executor
            eng.backend.running_of("refuse")[0].fail(RequestError("the input is not a city"))
            row = await eng.finished(run)
            assert row.status == "failed" and row.error_kind == "request_error"
            assert len(eng.backend.calls_of("refuse")) == 1  # never retried
            assert eng.stored_status(run, "slow") == "cancelled"
            await eng.until(lambda: slow_executor.stopped, "slow's executor to stop")
            with pytest.raises(RequestError, match="not a city"):
                eng.result(run)

    drive(scenario)


def test_cancelling_a_run_stops_what_runs_and_starts_nothing_more(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": lambda _: call("join", call("slow", 1, id="s1"),
                                                                call("slow", 2, id="s2"), id="join"),
                                         "slow": Fn(None, max_containers=1), "join": echo}) as eng:
            run = eng.submit()
            await eng.until(lambda: eng.backend.running_of("slow") and eng.scheduler.queued_call_ids(run.run_id),
                            "one slow call running, one queued")
            running = eng.backend.running_of("slow")[0]
            eng.scheduler.cancel_run(run.run_id, "stopped by the test")
            row = await eng.finished(run)
            assert row.status == "cancelled"
            statuses = {r.call_id: r.status for r in eng.reader.load_calls(run.run_id)}
            # The root had handed off by tail call: it stays `tail`, finished executing.
            assert statuses == {run.root_id: "tail", "s1": "cancelled", "s2": "cancelled", "join": "cancelled"}
            await eng.until(lambda: running.executor.stopped, "the running call's executor to stop")
            assert len(eng.backend.calls_of("slow")) == 1 and not eng.backend.calls_of("join")
            with pytest.raises(RequestCancelled, match="stopped by the test"):
                eng.result(run)

    drive(scenario)


def test_a_call_that_would_cross_max_calls_is_refused_before_it_exists(tmp_path: Path) -> None:
    async def main(c: FakeCall) -> None:
        for i in range(5):
            await c.submit(call("work", i, id=f"w{i}"))

    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": main, "work": None}) as eng:
            run = eng.submit(budget=Budget(max_calls=4))
            row = await eng.finished(run)
            assert row.status == "failed" and row.error_kind == "budget_exceeded"
            ids = {r.call_id for r in eng.reader.load_calls(run.run_id)}
            assert ids == {run.root_id, "w0", "w1", "w2"}  # w3 was refused: no row, never run
            assert not eng.backend.calls_of("work")  # nothing of the run starts after
            root = eng.stored(run, run.root_id)
            assert root is not None and root.error_kind == "budget_exceeded"
            with pytest.raises(BudgetExceeded, match="max_calls=4") as raised:
                eng.result(run)
            assert raised.value.limit == "max_calls"  # type: ignore[attr-defined]

    drive(scenario)


def test_the_creating_call_is_told_its_future_was_refused(tmp_path: Path) -> None:
    refused: list[BaseException] = []

    async def main(c: FakeCall) -> None:
        try:
            await c.submit(call("work", 1, id="w1"), call("work", 2, id="w2"))
        except BudgetRefused as exc:
            refused.append(exc)
            raise

    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": main, "work": echo}) as eng:
            run = eng.submit(budget=Budget(max_calls=2))
            await eng.finished(run)
            assert len(refused) == 1 and "max_calls=2" in str(refused[0])
            assert eng.stored(run, "w2") is None
            assert not eng.backend.calls_of("work")  # w1 existed, but nothing of the run starts after

    drive(scenario)


def test_a_tail_call_deeper_than_max_depth_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": lambda c: call("step", 1, id="d1"),
                                         "step": lambda c: call("step", c.arg + 1, id=f"d{c.arg + 1}")}) as eng:
            run = eng.submit(budget=Budget(max_depth=2))
            row = await eng.finished(run)
            assert row.status == "failed" and row.error_kind == "budget_exceeded"
            assert "max_depth=2" in (row.error_message or "")
            assert eng.stored(run, "d2") is not None and eng.stored(run, "d3") is None
            assert [c.call_id for c in eng.backend.calls_of("step")] == ["d1", "d2"]

    drive(scenario)


def test_a_call_waiting_for_a_signal_holds_no_executor_until_it_arrives(tmp_path: Path) -> None:
    async def scenario() -> None:
        approval = signal("approval", id="approval")
        async with FakeEngine(tmp_path, {"main": lambda _: call("publish", call("draft", id="draft"), approval,
                                                                id="publish"),
                                         "draft": lambda _: "text", "publish": echo}) as eng:
            run = eng.submit()
            await eng.until(lambda: eng.stored_status(run, "draft") == "succeeded", "the draft")
            assert run.waiting.keys() == {"approval"}
            assert not eng.backend.started_of("publish")  # not even its first executor
            assert eng.stored_status(run, "approval") == "pending"
            send_signal(eng.reader, run.run_id, "approval", {"ok": True})
            eng.scheduler.signal_arrived(run.run_id)
            await eng.finished(run)
            assert eng.result(run) == (("text", {"ok": True}), {})
            assert len(eng.backend.started_of("publish")) == 1

    drive(scenario)


def test_a_signal_that_does_not_come_in_time_fails_what_waits_for_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        approval = signal("approval", timeout=0.05, id="approval")
        async with FakeEngine(tmp_path, {"main": lambda _: call("publish", approval, id="publish"),
                                         "publish": echo}) as eng:
            run = eng.submit()
            row = await eng.finished(run)
            assert row.status == "failed" and row.error_kind == "signal_timeout"
            publish = eng.stored(run, "publish")
            assert publish is not None and publish.error_kind == "dependency_failed"
            assert not eng.backend.started_of("publish")
            assert "no signal 'approval' arrived within 0.05 s" in (row.error_message or "")

    drive(scenario)


def test_the_first_completed_wait_returns_before_the_rest(tmp_path: Path) -> None:
    async def scenario() -> None:
        release = asyncio.Event()

        async def slow(c: FakeCall) -> str:
            await release.wait()
            return "s"

        async def main(c: FakeCall) -> list[str]:
            fast, late = call("fast", id="fast"), call("slow", id="slow")
            await c.submit(fast, late)
            first = await c.wait(fast, late, return_when=pb.RETURN_WHEN_FIRST_COMPLETED)
            assert first == {"fast": "f"}
            release.set()
            rest = await c.wait(late)
            return [first["fast"], rest["slow"]]

        async with FakeEngine(tmp_path, {"main": main, "fast": lambda _: "f", "slow": slow}) as eng:
            run = eng.submit()
            await eng.finished(run)
            assert eng.result(run) == ["f", "s"]

    drive(scenario)
