"""Executor pools on the fake backend (`tests/unit/fakebackend.py`): how many executors the
scheduler starts for queued calls, how many calls each one gets, when they go, what a failed
start does, and how the runs sharing a pool take turns (`engine.scheduler.pools`; the
dispatcher's `pump`, `_after_call`, `_fail_queue` in `engine.scheduler.dispatch`;
docs/configuration.md, docs/server.md).

Calls of functions without a handler are held until the test answers them, so every state a
test asserts on is one the test brought about, not one it hopes to catch in time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

from fakebackend import FakeCall, FakeEngine, Fn, call, drive, echo

from engine.app import FunctionSettings
from engine.errors import InfrastructureError
from engine.scheduler.dispatch import Dispatcher
from engine.scheduler.pools import Pool
from engine.scheduler.state import QUEUED, RunState
from engine.sdk.function import FunctionConfig
from engine.sdk.retries import Retries
from engine.store import Store


def fan_out(function: str, n: int):  # type: ignore[no-untyped-def]
    """A root that tail-calls `combine` over `n` calls of `function`."""
    return lambda c: call("combine", [call(function, i) for i in range(n)])


def combine(c: FakeCall) -> list[object]:
    return list(c.arg)


def test_a_queue_gets_executors_up_to_max_containers_and_never_more(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": fan_out("work", 8), "combine": combine,
                                         "work": Fn(None, max_containers=3)}) as eng:
            run = eng.submit()
            await eng.until(lambda: len(eng.backend.running_of("work")) == 3, "3 work calls running")
            assert len(eng.scheduler.queued_call_ids(run.run_id)) == 5
            # Answer one at a time: each answer re-judges the pool with calls still queued,
            # and the freed slot takes the next call instead of a new executor starting.
            for answered in range(8):
                held = eng.backend.running_of("work")
                assert len(held) == min(3, 8 - answered)
                held[0].answer(held[0].arg * 10)
                left = min(3, 8 - answered - 1)
                await eng.until(lambda left=left: len(eng.backend.running_of("work")) == left,  # type: ignore[misc]
                                "the freed slot to take the next call")
            await eng.finished(run)
            assert eng.result(run) == [i * 10 for i in range(8)]
            assert eng.backend.peak["work"] == 3
            assert len(eng.backend.started_of("work")) == 3
            assert len(eng.backend.calls_of("work")) == 8

    drive(scenario)


def test_each_executor_runs_at_most_its_concurrency(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": fan_out("work", 10), "combine": combine,
                                         "work": Fn(None, max_containers=2, concurrency=3)}) as eng:
            run = eng.submit()
            await eng.until(lambda: len(eng.backend.running_of("work")) == 6, "2 executors x 3 calls")
            executors = eng.backend.live_of("work")
            assert len(executors) == 2
            assert [len(ex.running) for ex in executors] == [3, 3]
            assert len(eng.scheduler.queued_call_ids(run.run_id)) == 4
            # Each executor's Initialize told it its concurrency.
            assert {ex.initialized.concurrency for ex in executors} == {3}  # type: ignore[union-attr]
            await eng.serve(run, "work")
            assert eng.result(run) == list(range(10))
            assert max(ex.most_running for ex in eng.backend.started_of("work")) == 3
            assert len(eng.backend.started_of("work")) == 2

    drive(scenario)


def test_max_executors_caps_every_function_together(tmp_path: Path) -> None:
    """The engine-wide cap is shared by the functions; the root, blocked waiting on its
    children, does not count against it."""

    async def main(c: FakeCall) -> list[object]:
        children = [call("a", i) for i in range(6)] + [call("b", i) for i in range(6)]
        await c.submit(*children)
        values = await c.wait(*children)
        return [values[n.id] for n in children]

    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": main, "a": None, "b": None}, max_executors=3) as eng:
            run = eng.submit()
            working = lambda: len(eng.backend.running_of("a")) + len(eng.backend.running_of("b"))  # noqa: E731
            await eng.until(lambda: working() == 3, "3 executors for a and b together")
            assert eng.backend.live_of("a") and eng.backend.live_of("b")  # each function got one
            await eng.serve(run, "a", "b", value=lambda c: c.function + str(c.arg))
            assert eng.result(run) == [f"a{i}" for i in range(6)] + [f"b{i}" for i in range(6)]
            assert max(h["a"] + h["b"] for h in eng.backend.history) == 3

    drive(scenario)


def test_every_function_with_calls_gets_its_first_executor_whatever_max_executors(tmp_path: Path) -> None:
    async def main(c: FakeCall) -> list[object]:
        children = [call("a", 1), call("a", 2), call("b", 1)]
        await c.submit(*children)
        values = await c.wait(*children)
        return [values[n.id] for n in children]

    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": main, "a": None, "b": None}, max_executors=1) as eng:
            run = eng.submit()
            await eng.until(lambda: eng.backend.running_of("a") and eng.backend.running_of("b"),
                            "a call of a and one of b running")
            await eng.serve(run, "a", "b", value=lambda c: c.function + str(c.arg))
            assert eng.result(run) == ["a1", "a2", "b1"]
            assert eng.backend.peak["a"] == 1 and eng.backend.peak["b"] == 1  # but no second one

    drive(scenario)


def test_parents_blocked_on_their_children_leave_room_for_them(tmp_path: Path) -> None:
    """A recursive fan-out cannot deadlock the engine: the root and two parents waiting on
    their children hold executors that do not count against max_executors, so the children's
    function grows to the cap (not to the cap minus its ancestors)."""

    async def main(c: FakeCall) -> list[object]:
        parents = [call("parent", 1), call("parent", 2)]
        await c.submit(*parents)
        values = await c.wait(*parents)
        return [values[p.id] for p in parents]

    async def parent(c: FakeCall) -> int:
        children = [call("leaf", c.arg * 10 + i) for i in range(3)]
        await c.submit(*children)
        values = await c.wait(*children)
        return sum(values.values())

    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": main, "parent": Fn(parent, max_containers=2), "leaf": None},
                              max_executors=3) as eng:
            run = eng.submit()
            await eng.until(lambda: len(eng.backend.running_of("leaf")) == 3, "3 leaf executors")
            assert len(eng.backend.running_of("parent")) == 2
            await eng.serve(run, "leaf")
            assert eng.result(run) == [10 + 11 + 12, 20 + 21 + 22]
            assert eng.backend.peak["leaf"] == 3

    drive(scenario)


def test_idle_executors_retire_down_to_the_warm_minimum(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": None, "combine": combine,
                                         "work": Fn(None, max_containers=3, warm_containers=1)},
                              idle_timeout=0.05) as eng:
            run = eng.submit()
            # The warm minimum starts with the run, while no call of the function exists yet.
            await eng.until(lambda: eng.backend.running_of("main"), "the root call")
            await eng.until(lambda: len(eng.backend.live_of("work")) == 1, "the warm executor")
            eng.backend.running_of("main")[0].tail(call("combine", [call("work", i) for i in range(6)]))
            await eng.until(lambda: len(eng.backend.running_of("work")) == 3, "3 work calls running")
            await eng.serve(run, "work")
            assert eng.result(run) == list(range(6))
            # Functions without a minimum go entirely; `work` keeps its one.
            await eng.until(lambda: not eng.backend.live_of("combine") and not eng.backend.live_of("main"),
                            "combine's and main's executors to retire")
            await eng.until(lambda: len(eng.backend.live_of("work")) <= 1, "work's extra executors to retire")
            assert len(eng.backend.live_of("work")) == 1
            assert len([ex for ex in eng.backend.started_of("work") if ex.stopped]) == 2

    drive(scenario)


def test_a_caller_that_tail_calls_releases_its_executor_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        # An hour's idle timeout: only the tail call can explain the root's executor stopping.
        async with FakeEngine(tmp_path, {"main": lambda c: call("work", 1), "work": None},
                              idle_timeout=3600) as eng:
            run = eng.submit()
            await eng.until(lambda: eng.backend.running_of("work"), "the tail call to run")
            await eng.until(lambda: not eng.backend.live_of("main"), "main's executor to stop")
            assert not run.done.is_set()
            eng.backend.running_of("work")[0].answer("done")
            await eng.finished(run)
            assert eng.result(run) == "done"
            assert eng.backend.live_of("work")  # an executor that returned a value stays, idle

    drive(scenario)


def test_a_failed_start_fails_the_queued_calls_when_no_executor_can_serve_them(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": fan_out("work", 3), "combine": combine,
                                         "work": Fn(echo, max_containers=2)}) as eng:
            eng.backend.start_errors["work"] = InfrastructureError("image fake-runtime:1 is missing")
            run = eng.submit()
            row = await eng.finished(run)
            assert row.status == "failed"
            assert row.error_message is not None and \
                "could not start an executor for work: image fake-runtime:1 is missing" in row.error_message
            works = [r for r in eng.reader.load_calls(run.run_id) if r.function == "work"]
            assert len(works) == 3
            assert {r.status for r in works} == {"failed"}
            assert {r.error_kind for r in works} == {"internal"}
            combine_row = next(r for r in eng.reader.load_calls(run.run_id) if r.function == "combine")
            assert combine_row.error_kind == "dependency_failed"
            assert not eng.backend.calls_of("work") and not eng.backend.calls_of("combine")

    drive(scenario)


def test_a_failed_start_keeps_the_queue_while_another_executor_serves_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": fan_out("work", 4), "combine": combine,
                                         "work": Fn(None, max_containers=2)}) as eng:
            run = eng.submit()
            await eng.until(lambda: eng.backend.running_of("work"), "the first work executor")
            eng.backend.start_errors["work"] = InfrastructureError("no room on the machine")
            await eng.until(lambda: eng.backend.start_failures["work"] >= 1, "a second start to fail")
            assert len(eng.scheduler.queued_call_ids(run.run_id)) == 3
            await eng.serve(run, "work")
            assert eng.result(run) == [0, 1, 2, 3]
            assert len(eng.backend.started_of("work")) == 1

    drive(scenario)


def test_an_executor_on_another_python_fails_the_queue_saying_how_to_fix_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": echo}) as eng:
            eng.backend.python_version = "3.1.0"
            run = eng.submit(1)
            row = await eng.finished(run)
            assert row.status == "failed"
            assert "runs Python 3.1.0" in (row.error_message or "")
            assert "`engine image build`" in (row.error_message or "")
            assert all(ex.stopped for ex in eng.backend.started)  # never used, and stopped

    drive(scenario)


def test_a_dead_executor_is_replaced_and_its_call_retried(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": lambda c: call("work", 7),
                                         "work": Fn(None, retries=Retries(max_retries=1, initial_delay=0))}) as eng:
            run = eng.submit()
            await eng.until(lambda: eng.backend.running_of("work"), "the work call")
            first = eng.backend.live_of("work")[0]
            first.kill(oom_killed=True)
            await eng.until(lambda: any(c.attempt == 2 for c in eng.backend.running_of("work")), "attempt 2")
            second = eng.backend.running_of("work")[0]
            assert second.executor is not first
            assert first.stopped  # the scheduler stopped (removed) the dead one
            second.answer(70)
            await eng.finished(run)
            assert eng.result(run) == 70
            attempts = eng.reader.failed_attempts(run.run_id)
            assert [(a.attempt, a.error_kind) for a in attempts] == [(1, "out_of_memory")]

    drive(scenario)


# --- the runs that share a pool take turns --------------------------------------------------------


def test_runs_sharing_a_pool_take_turns_weighted_by_priority(tmp_path: Path) -> None:
    """Three runs queue on one executor slot (its start held until every call is queued): the
    slot serves them in turn, a run of priority 2 taking two calls a turn, however many calls
    each run queued (docs/server.md, "Fair share between runs")."""

    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": lambda c: call("combine", [call("work", (c.arg, i))
                                                                           for i in range(c.kwargs["n"])]),
                                         "combine": combine,
                                         "work": Fn(echo, max_containers=1)}) as eng:
            gate = eng.backend.gates["work"] = asyncio.Event()
            big = eng.submit("big", n=6, priority=1)
            high = eng.submit("high", n=4, priority=2)
            small = eng.submit("small", n=2, priority=1)
            for run, n in ((big, 6), (high, 4), (small, 2)):
                await eng.until(lambda run=run, n=n: sum(  # type: ignore[misc]
                    c.status == QUEUED and c.function == "work" for c in run.calls.values()) == n,
                    f"{n} queued calls of {run.run_id}")
            gate.set()
            for run in (big, high, small):
                await eng.finished(run)
            order = [c.arg[0] for c in eng.backend.calls_of("work")]
            assert order == ["big", "high", "high", "small", "big", "high", "high", "small",
                             "big", "big", "big", "big"]
            assert eng.result(big) == [("big", i) for i in range(6)]

    drive(scenario)


def test_a_cancelled_run_leaves_the_queue_it_shares(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": lambda c: call("combine", [call("work", (c.arg, i))
                                                                           for i in range(3)]),
                                         "combine": combine, "work": Fn(None, max_containers=1)}) as eng:
            a, b = eng.submit("a"), eng.submit("b")
            await eng.until(lambda: len(eng.scheduler.queued_call_ids(a.run_id)) == 2
                            and len(eng.scheduler.queued_call_ids(b.run_id)) == 3, "both runs queued")
            eng.scheduler.cancel_run(b.run_id)
            assert (await eng.finished(b)).status == "cancelled"
            await eng.serve(a, "work")
            assert eng.result(a) == [("a", i) for i in range(3)]
            assert {c.arg[0] for c in eng.backend.calls_of("work")} == {"a"}

    drive(scenario)


# --- how many executors a queue is worth (`Pool.wanted`, the decision behind the ramp) -----------


def pool_with(queued: int, executors: list[int], *, concurrency: int = 1, max_containers: int | None = None,
              avg_call: float | None = None, first_dispatch: float | None = None,
              prior: float | None = None) -> Pool:
    """A pool of executors with these in-flight counts and `queued` calls of one run."""
    config = FunctionConfig(concurrency=concurrency, max_containers=max_containers)
    pool = Pool(SimpleNamespace(name="app"), FunctionSettings("work", "fakeapp", config, Retries()))  # type: ignore[arg-type]
    pool.executors = [SimpleNamespace(stopping=False, inflight=n) for n in executors]  # type: ignore[misc]
    run = SimpleNamespace(run_id="r", priority=1, done=asyncio.Event())
    for i in range(queued):
        pool.queue.append(SimpleNamespace(run=run, id=f"c{i}"))  # type: ignore[arg-type]
    pool.avg_call, pool.first_dispatch, pool.prior = avg_call, first_dispatch, prior
    return pool


def test_a_pool_with_no_executor_starts_one_before_it_knows_how_long_calls_take() -> None:
    assert pool_with(100, []).wanted(now=0.0, start_cost=0.5) == 1
    assert pool_with(0, []).wanted(now=0.0, start_cost=0.5) == 0


def test_slow_calls_get_an_executor_each_up_to_max_containers_at_once() -> None:
    # Ten calls of 2 s queued behind one busy executor: each is worth its own start.
    pool = pool_with(10, [1], max_containers=10, avg_call=2.0)
    assert pool.wanted(now=0.0, start_cost=0.5) == 9
    assert pool_with(10, [1], max_containers=4, avg_call=2.0).wanted(now=0.0, start_cost=0.5) == 3


def test_trivial_calls_are_drained_by_the_executors_there_are() -> None:
    # A thousand 1 ms calls: one executor finishes them before another would have started.
    assert pool_with(300, [1], avg_call=0.001).wanted(now=0.0, start_cost=0.5) == 0


def test_free_slots_and_starting_executors_count_before_new_starts() -> None:
    assert pool_with(3, [0, 1], concurrency=2).wanted(now=0.0, start_cost=0.5) == 0
    starting = pool_with(4, [], concurrency=2)
    starting.starting = 2
    assert starting.wanted(now=0.0, start_cost=0.5) == 0


def test_before_any_call_ends_its_age_stands_for_its_duration() -> None:
    # Nothing has finished yet: the first call has run 3 s, so the queue is slow work.
    assert pool_with(5, [1], max_containers=8, first_dispatch=10.0).wanted(now=13.0, start_cost=0.5) == 5
    assert pool_with(5, [1], max_containers=8, first_dispatch=10.0).wanted(now=10.01, start_cost=0.5) == 0


def test_the_pool_knows_when_time_alone_makes_the_whole_queue_worth_its_executors() -> None:
    # Nine calls queued behind one that has run since t=10: all nine executors are worth
    # starting together once age × 9 / start cost reaches 1 + 9, at t = 10 + 10 × 0.45 / 9.
    pool = pool_with(9, [1], max_containers=10, first_dispatch=10.0)
    delay = pool.judge_again_in(now=10.0, start_cost=0.45)
    assert delay is not None and abs(delay - 0.501) < 1e-9
    assert pool.wanted(now=10.0 + delay - 0.002, start_cost=0.45) < 9
    assert pool.wanted(now=10.0 + delay, start_cost=0.45) == 9
    # Capped: the five `max_containers` leaves are worth it sooner (1 + 4 executors).
    capped = pool_with(9, [1], max_containers=5, first_dispatch=10.0)
    capped_delay = capped.judge_again_in(now=10.0, start_cost=0.45)
    assert capped_delay is not None and abs(capped_delay - (5 * 0.45 / 9 + 1e-3)) < 1e-9
    assert capped.wanted(now=10.0 + 5 * 0.45 / 9 + 1e-3, start_cost=0.45) == 4
    # Already worth it by time: whatever holds the starts back is no matter of waiting.
    assert pool.judge_again_in(now=10.0 + delay, start_cost=0.45) is None


def test_waiting_changes_nothing_once_a_call_has_ended_or_the_pool_is_full() -> None:
    assert pool_with(9, [1], avg_call=2.0, first_dispatch=10.0).judge_again_in(now=10.0, start_cost=0.5) is None
    assert pool_with(9, [], first_dispatch=10.0).judge_again_in(now=10.0, start_cost=0.5) is None
    assert pool_with(9, [1, 1], max_containers=2, first_dispatch=10.0).judge_again_in(now=10.0, start_cost=0.5) is None
    covered = pool_with(3, [1], first_dispatch=10.0)
    covered.starting = 3
    assert covered.judge_again_in(now=10.0, start_cost=0.5) is None


def test_calls_that_were_slow_in_earlier_runs_get_their_executors_at_the_first_dispatch() -> None:
    # Ten calls that took 2 s last time, nothing running yet: one executor each, at once.
    assert pool_with(10, [], max_containers=10, prior=2.0).wanted(now=0.0, start_cost=0.5) == 10
    assert pool_with(10, [], max_containers=4, prior=2.0).wanted(now=0.0, start_cost=0.5) == 4
    # The first executor still starting counts; the rest start beside it.
    starting = pool_with(10, [], max_containers=10, prior=2.0)
    starting.starting = 1
    assert starting.wanted(now=0.0, start_cost=0.5) == 9
    # Trivial last time: one executor, as for a function never seen.
    assert pool_with(300, [], prior=0.001).wanted(now=0.0, start_cost=0.5) == 1
    assert pool_with(300, [1], prior=0.001, first_dispatch=0.0).wanted(now=0.0, start_cost=0.5) == 0


def test_this_runs_calls_overrule_what_earlier_runs_measured() -> None:
    # Quick last time, but the first call of this run has run for 3 s: its age stands.
    assert pool_with(5, [1], max_containers=8, first_dispatch=10.0, prior=0.001).wanted(
        now=13.0, start_cost=0.5) == 5
    # ... and time alone still brings the ramp.
    delay = pool_with(9, [1], max_containers=10, first_dispatch=10.0, prior=0.01).judge_again_in(
        now=10.0, start_cost=0.45)
    assert delay is not None and abs(delay - 0.501) < 1e-9
    # Slow last time, but a call of this run has finished in 1 ms: that is what counts.
    assert pool_with(300, [1], prior=5.0, avg_call=0.001).wanted(now=0.0, start_cost=0.5) == 0


def test_a_second_run_starts_as_many_executors_as_the_first_one_needed_at_once(
        tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The first run's calls take about 0.3 s each; its end records that (the store's
    `call_durations`). A second engine on the same store, with every re-judgement by time
    off, nothing started ahead from the first run's width, and its calls held until all are
    running, can only reach four executors before a call ends if it starts them at its first
    dispatch, from that record."""
    async def slow_serve(eng: FakeEngine, run: RunState) -> None:
        while not run.done.is_set():
            running = eng.backend.running_of("work")
            if running:
                await asyncio.sleep(0.3)
                for c in running:
                    c.answer(c.arg)
            await eng.until(lambda: run.done.is_set() or bool(eng.backend.running_of("work")), "work")

    async def first() -> None:
        async with FakeEngine(tmp_path, {"main": fan_out("work", 4), "combine": combine,
                                         "work": Fn(None, max_containers=4)}) as eng:
            run = eng.submit()
            await slow_serve(eng, run)
            assert eng.result(run) == list(range(4))
            recorded = eng.reader.call_durations("main")
            assert 0.3 <= recorded["work"] < 5.0

    async def second() -> None:
        async with FakeEngine(tmp_path, {"main": fan_out("work", 4), "combine": combine,
                                         "work": Fn(None, max_containers=4)}) as eng:
            run = eng.submit()
            await eng.until(lambda: len(eng.backend.running_of("work")) == 4, "a work executor per call")
            assert len(eng.backend.started_of("work")) == 4
            await eng.serve(run, "work")
            assert eng.result(run) == list(range(4))

    drive(first)
    monkeypatch.setattr(Dispatcher, "tick", lambda self: None)
    monkeypatch.setattr(Pool, "judge_again_in", lambda self, now, start_cost: None)
    # Nor does it start the first run's width ahead (the next test): only the durations count.
    monkeypatch.setattr(Store, "call_widths", lambda self, application: {})
    drive(second)


def test_a_new_run_starts_the_executors_the_last_run_used_while_its_root_still_works(tmp_path: Path) -> None:
    """The first run has at most four `work` calls running at once; its end records that (the
    store's `call_durations.width`). In the next run, four `work` executors start once the
    root has its executor, while the root is still held and no `work` call exists yet; its
    fan-out then finds them and starts no other (nor does the combiner, whose one executor
    started with them). With `max_containers` lowered to 2 (and
    `concurrency` 2), two start: 2 executors × 2 slots are the four calls' width."""
    async def first() -> None:
        async with FakeEngine(tmp_path, {"main": fan_out("work", 4), "combine": combine,
                                         "work": Fn(None, max_containers=4)}) as eng:
            run = eng.submit()
            await eng.until(lambda: len(eng.backend.running_of("work")) == 4, "four work calls at once")
            await eng.serve(run, "work")
            assert eng.result(run) == list(range(4))
            assert eng.reader.call_widths("main") == {"main": 1, "combine": 1, "work": 4}

    async def again(max_containers: int, concurrency: int, executors: int) -> None:
        async with FakeEngine(tmp_path, {"main": None, "combine": combine,
                                         "work": Fn(None, max_containers=max_containers,
                                                    concurrency=concurrency)}) as eng:
            run = eng.submit()
            await eng.until(lambda: eng.backend.running_of("main"), "the root running")
            await eng.until(lambda: len(eng.backend.live_of("work")) == executors,
                            f"{executors} work executors before any work call")
            assert not eng.backend.calls_of("work")
            assert len(eng.backend.started_of("combine")) == 1  # its width too
            root = eng.backend.running_of("main")[0]
            root.tail(call("combine", [call("work", i) for i in range(4)]))
            await eng.until(lambda: len(eng.backend.running_of("work")) == 4, "the four calls on them")
            await eng.serve(run, "work")
            assert eng.result(run) == list(range(4))
            assert len(eng.backend.started_of("work")) == executors
            assert len(eng.backend.started_of("combine")) == 1

    drive(first)
    drive(lambda: again(4, 1, 4))
    drive(lambda: again(2, 2, 2))


def test_a_ramp_follows_the_estimate_without_waiting_for_the_schedulers_tick(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Calls held forever, so no call ever ends and nothing but time can justify a second
    executor: with the scheduler's periodic re-judgement off, the pool's own timer
    (`Pool.judge_again_in`) must bring the ramp to `max_containers`."""
    monkeypatch.setattr(Dispatcher, "tick", lambda self: None)

    async def scenario() -> None:
        async with FakeEngine(tmp_path, {"main": fan_out("work", 6), "combine": combine,
                                         "work": Fn(None, max_containers=6)}) as eng:
            run = eng.submit()
            await eng.until(lambda: len(eng.backend.running_of("work")) == 6, "a work executor per call", timeout=20)
            assert len(eng.backend.started_of("work")) == 6
            await eng.serve(run, "work")
            assert eng.result(run) == list(range(6))

    drive(scenario)
