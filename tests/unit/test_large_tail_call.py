"""A tail call of more than `TAIL_SLICE` futures, on the fake backend (`tests/unit/fakebackend.py`):
it is added in slices with the loop served between them (`Scheduler._add_tail`), each slice is
committed, its calls start while the rest is added, a cancel stops the adding, and a malformed
future or the run's budget refuses the whole graph before any of it exists. The same for a call
that starts that many futures in one `Submit` (`Scheduler.submit_children`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fakebackend import FakeEngine, call, drive

from engine.scheduler.budgets import Budget
from engine.scheduler.scheduler import TAIL_SLICE
from engine.scheduler.state import RUNNING, TAIL

N = 12 * TAIL_SLICE


def fan_out(n: int) -> Any:
    return call("total", *[call("work", i, id=f"w{i}") for i in range(n)], id="total")


def committed_work(eng: FakeEngine, run: Any) -> int:
    return sum(1 for r in eng.reader.load_calls(run.run_id) if r.function == "work")


def test_a_large_tail_call_is_added_in_slices_while_its_first_calls_run(tmp_path: Path) -> None:
    graph = fan_out(N)

    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": lambda _: graph, "work": None,
                                         "total": lambda c: len(c.request.arguments.args)}) as eng:
            run = eng.submit()
            # A task of its own, woken at every loop turn: what it sees is what any other
            # task (an executor's stream, a lease renewal) could do meanwhile.
            seen: dict[str, Any] = {}

            async def watch() -> None:
                while not run.done.is_set():
                    await asyncio.sleep(0)
                    root = run.calls.get(run.root_id)
                    if root is None or "total" in run.calls:
                        continue
                    if root.status == RUNNING and len(run.calls) > 1:
                        seen.setdefault("partial", len(run.calls) - 1)
                        if eng.backend.calls_of("work") and "dispatched" not in seen:
                            seen["dispatched"] = len(run.calls) - 1
                            seen["committed"] = committed_work(eng, run)

            watcher = asyncio.ensure_future(watch())
            await eng.until(lambda: run.calls[run.root_id].status == TAIL, "the tail call to be added", 60)
            # The loop ran between slices: the graph was seen partly added ...
            assert 0 < seen["partial"] < N, seen
            # ... and `work` calls were sent to an executor before the last slice was added,
            # with the slices so far committed (the store holds some of the graph, not all).
            assert 0 < seen["dispatched"] < N, seen
            assert 0 < seen["committed"] <= seen["dispatched"], seen
            await eng.serve(run, "work", value=lambda c: c.arg)
            await eng.finished(run, 60)
            assert eng.result(run) == N
            watcher.cancel()
            assert committed_work(eng, run) == N
            assert len(eng.backend.calls_of("work")) == N  # each ran once

    drive(scenario)


def test_cancelling_the_run_while_its_tail_call_is_added_stops_the_adding(tmp_path: Path) -> None:
    graph = fan_out(N)

    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": lambda _: graph, "work": None, "total": None}) as eng:
            run = eng.submit()
            await eng.until(lambda: len(run.calls) > 2 * TAIL_SLICE, "part of the graph to be added", 60)
            assert run.calls[run.root_id].status == RUNNING
            eng.scheduler.cancel_run(run.run_id, "stop")
            row = await eng.finished(run, 60)
            assert row.status == "cancelled"
            added = len(run.calls)
            for _ in range(20):
                await asyncio.sleep(0)
            assert len(run.calls) == added < N + 2 and "total" not in run.calls
            assert run.calls[run.root_id].task is None  # its adding task ended

    drive(scenario)


def test_a_malformed_future_refuses_the_whole_large_tail_call(tmp_path: Path) -> None:
    graph = fan_out(N)
    graph.deps[-1].spec.function = ""  # the last `work` future names no function

    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": lambda _: graph, "work": None, "total": None}) as eng:
            run = eng.submit()
            row = await eng.finished(run, 60)
            assert row.status == "failed"
            assert "bad tail call from main" in (row.error_message or "")
            assert "no function" in (row.error_message or "")
            # Checked before anything was added: no call of it exists, none ran.
            assert list(run.calls) == [run.root_id]
            assert not eng.backend.calls_of("work")

    drive(scenario)


def test_a_large_tail_call_over_the_budget_is_refused_before_any_of_it_starts(tmp_path: Path) -> None:
    """Its last slice would cross `max_calls`: the whole graph is refused before the first slice is
    added, so no `work` call exists or runs (sliced, the first slices' calls would have started)."""
    graph = fan_out(N)

    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": lambda _: graph, "work": None, "total": None}) as eng:
            run = eng.submit(budget=Budget(max_calls=N))  # the root, N works and total: N + 2
            row = await eng.finished(run, 60)
            assert row.status == "failed"
            assert f"budget max_calls={N} reached: main" in (row.error_message or ""), row.error_message
            assert list(run.calls) == [run.root_id]
            assert committed_work(eng, run) == 0
            assert not eng.backend.calls_of("work")

    drive(scenario)


def _starter(n: int, seen: dict[str, Any]) -> Any:
    """A function that starts `n` futures in one `Submit` (as `wait` on a list of unstarted futures
    does), then waits for them and returns the sum of their values."""

    async def main(c: Any) -> int:
        works = [call("work", i, id=f"w{i}") for i in range(n)]
        try:
            await c.submit(*works)
        except Exception as exc:  # noqa: BLE001 - what the creating call is told
            seen["raised"] = repr(exc)
            raise
        return sum((await c.wait(*works)).values())

    return main


def test_a_large_submit_is_added_in_slices_and_answered_once_all_exist(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": _starter(N, seen), "work": lambda c: c.arg}) as eng:
            run = eng.submit()

            async def watch() -> None:
                while not run.done.is_set():
                    await asyncio.sleep(0)
                    added = len(run.calls) - 1
                    if 0 < added < N:
                        seen.setdefault("partial", added)
                        if eng.backend.calls_of("work"):
                            seen.setdefault("dispatched", added)

            watcher = asyncio.ensure_future(watch())
            await eng.finished(run, 60)
            watcher.cancel()
            assert eng.result(run) == sum(range(N))
            # The loop ran between slices, and `work` calls were sent before the last was added.
            assert 0 < seen["partial"] < N and 0 < seen["dispatched"] < N, seen
            assert committed_work(eng, run) == N
            assert len(eng.backend.calls_of("work")) == N

    drive(scenario)


def test_a_large_submit_over_the_budget_is_refused_before_any_of_it_exists(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": _starter(N, seen), "work": None}) as eng:
            run = eng.submit(budget=Budget(max_calls=N))  # the root and N works: N + 1
            row = await eng.finished(run, 60)
            assert row.status == "failed"
            assert f"budget max_calls={N} reached: main" in (row.error_message or ""), row.error_message
            assert "BudgetRefused" in seen.get("raised", ""), seen
            assert list(run.calls) == [run.root_id]
            assert committed_work(eng, run) == 0 and not eng.backend.calls_of("work")

    drive(scenario)
