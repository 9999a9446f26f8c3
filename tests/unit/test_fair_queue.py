"""The fair queue alone (`engine.scheduler.pools.FairQueue`): runs take turns, weighted by
priority; a finished run's calls leave at once; and `max_concurrent_calls` as the dispatcher's
pump applies it (`Dispatcher.pump`), with no executor or backend behind it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from engine.scheduler.pools import FairQueue


def make_run(run_id: str, priority: int = 1) -> Any:
    return SimpleNamespace(run_id=run_id, priority=priority, done=asyncio.Event())


def make_call(run: Any, n: int) -> Any:
    return SimpleNamespace(run=run, id=f"{run.run_id}-{n}")


def fill(queue: FairQueue, run: Any, n: int) -> None:
    for i in range(n):
        queue.append(make_call(run, i))


def drain(queue: FairQueue, n: int | None = None) -> list[str]:
    out = []
    while queue and (n is None or len(out) < n):
        out.append(queue.popleft().id)
    return out


def test_one_run_is_first_in_first_out() -> None:
    q = FairQueue()
    fill(q, make_run("a"), 5)
    assert len(q) == 5
    assert drain(q) == [f"a-{i}" for i in range(5)]
    assert not q and len(q) == 0
    with pytest.raises(IndexError):
        q.popleft()


def test_runs_take_turns_not_calls() -> None:
    big, small = make_run("big"), make_run("small")
    q = FairQueue()
    fill(q, big, 1000)
    fill(q, small, 3)
    # The small run, queued behind a thousand calls, gets every other dispatch.
    assert drain(q, 6) == ["big-0", "small-0", "big-1", "small-1", "big-2", "small-2"]
    assert q.runs() == ["big"]
    assert drain(q) == [f"big-{i}" for i in range(3, 1000)]


def test_a_run_that_joins_waits_at_most_one_turn() -> None:
    runs = [make_run(f"r{i}") for i in range(3)]
    q = FairQueue()
    for run in runs:
        fill(q, run, 100)
    drain(q, 4)  # r0 r1 r2 r0
    late = make_run("late")
    fill(q, late, 1)
    # Every run already in the rotation has one turn, then the newcomer: not 297 calls later.
    assert drain(q, 4) == ["r1-1", "r2-1", "r0-2", "late-0"]


def test_priority_weights_the_share() -> None:
    high, low = make_run("high", priority=3), make_run("low")
    q = FairQueue()
    fill(q, high, 300)
    fill(q, low, 300)
    first = drain(q, 400)
    assert sum(1 for c in first if c.startswith("high")) == 300
    assert sum(1 for c in first if c.startswith("low")) == 100
    assert first[:8] == ["high-0", "high-1", "high-2", "low-0", "high-3", "high-4", "high-5", "low-1"]


def test_a_finished_run_leaves_the_queue_when_its_turn_comes() -> None:
    a, b = make_run("a"), make_run("b")
    q = FairQueue()
    fill(q, a, 50)
    fill(q, b, 2)
    assert drain(q, 1) == ["a-0"]
    b.done.set()  # cancelled: none of its calls will run
    assert drain(q, 1) == ["a-1"]
    assert len(q) == 48  # b's two calls are gone, all at once
    assert q.runs() == ["a"]


def test_discard_run_takes_out_its_calls() -> None:
    a, b, c = make_run("a"), make_run("b"), make_run("c")
    q = FairQueue()
    for run in (a, b, c):
        fill(q, run, 4)
    assert [x.id for x in q.discard_run(b)] == [f"b-{i}" for i in range(4)]
    assert q.discard_run(b) == []
    assert len(q) == 8 and q.queued(b) == 0 and q.queued(a) == 4
    assert drain(q) == ["a-0", "c-0", "a-1", "c-1", "a-2", "c-2", "a-3", "c-3"]


def test_a_resumed_run_is_not_dropped_with_its_cancelled_former_self() -> None:
    cancelled = make_run("r")
    q = FairQueue()
    fill(q, cancelled, 3)
    cancelled.done.set()
    resumed = make_run("r")  # `resume_run`: a new RunState under the same id
    fill(q, resumed, 2)
    assert drain(q) == ["r-0", "r-1"]
    assert not q


def test_retried_call_goes_to_the_back_of_its_run() -> None:
    a = make_run("a")
    q = FairQueue()
    fill(q, a, 2)
    first = q.popleft()
    q.append(first)  # requeued after a failed attempt
    assert drain(q) == ["a-1", "a-0"]


# --- max_concurrent_calls, as the dispatcher's pump applies it -----------------------------------


class FakeExecutor:
    def __init__(self, pool: Any) -> None:
        self.pool, self.inflight, self.blocked, self.stopping = pool, 0, 0, False
        self.active = True


def dispatcher_with(cap: int | None, concurrency: int = 100) -> tuple[Any, list[Any]]:
    from engine.scheduler.dispatch import Dispatcher
    from engine.scheduler.pools import Pool
    from engine.scheduler.warm import WarmPool

    app = SimpleNamespace(name="app", max_concurrent_calls=cap)
    settings = SimpleNamespace(name="f", config=SimpleNamespace(concurrency=concurrency, max_containers=None,
                                                                min_containers=0, warm_containers=0))
    pool = Pool(app, settings)  # type: ignore[arg-type]
    ex = FakeExecutor(pool)
    pool.executors.append(ex)  # type: ignore[arg-type]
    dispatched: list[Any] = []
    dispatcher = Dispatcher.__new__(Dispatcher)
    dispatcher.pools = {("digest", "f"): pool}
    dispatcher.max_executors = 4
    dispatcher.start_cost = 0.5
    dispatcher.warm = WarmPool(None, 0, {}, room=lambda: 0)  # type: ignore[arg-type] # no warm pool

    def dispatch(call: Any, executor: Any) -> None:
        executor.inflight += 1
        dispatched.append(call)

    dispatcher._dispatch = dispatch  # type: ignore[method-assign]
    dispatcher._start_executor = lambda pool: None  # type: ignore[method-assign]
    return dispatcher, dispatched


def queued_call(run: Any, n: int) -> Any:
    return SimpleNamespace(run=run, id=f"{run.run_id}-{n}", status="queued")


def test_max_concurrent_calls_caps_every_run_of_the_application_together() -> None:
    dispatcher, dispatched = dispatcher_with(cap=5)
    pool = next(iter(dispatcher.pools.values()))
    a, b = make_run("a"), make_run("b")
    for i in range(10):
        pool.queue.append(queued_call(a, i))
        pool.queue.append(queued_call(b, i))
    dispatcher.pump(pool)
    assert [c.id for c in dispatched] == ["a-0", "b-0", "a-1", "b-1", "a-2"]
    dispatcher.pump(pool)
    assert len(dispatched) == 5  # no room until one ends
    pool.executors[0].inflight -= 2
    dispatcher.pump(pool)
    assert [c.id for c in dispatched[5:]] == ["b-2", "a-3"]


def test_blocked_calls_do_not_count_against_max_concurrent_calls() -> None:
    dispatcher, dispatched = dispatcher_with(cap=2)
    pool = next(iter(dispatcher.pools.values()))
    run = make_run("a")
    for i in range(4):
        pool.queue.append(queued_call(run, i))
    dispatcher.pump(pool)
    assert len(dispatched) == 2
    pool.executors[0].blocked = 2  # both parents wait on their children
    dispatcher.pump(pool)
    assert len(dispatched) == 4


def test_without_a_cap_the_executor_is_the_limit() -> None:
    dispatcher, dispatched = dispatcher_with(cap=None, concurrency=3)
    pool = next(iter(dispatcher.pools.values()))
    run = make_run("a")
    for i in range(10):
        pool.queue.append(queued_call(run, i))
    dispatcher.pump(pool)
    assert len(dispatched) == 3


# --- where max_concurrent_calls comes from ------------------------------------------------------


def test_max_concurrent_calls_from_the_decorator_and_engine_yaml(tmp_path: Any) -> None:
    from engine.app import load_app
    from engine.errors import SDKUsageError
    from engine.sdk.function import application

    for bad in (0, -1, 2.5, True, "4"):
        with pytest.raises(SDKUsageError, match="max_concurrent_calls"):
            application(max_concurrent_calls=bad)  # type: ignore[arg-type]
    app_file = tmp_path / "capped_app.py"
    app_file.write_text(
        "from engine import application, function\n\n\n"
        "@application(max_concurrent_calls=3)\n@function()\ndef capped(n: int) -> int:\n    return n\n")
    assert load_app(f"{app_file}:capped").max_concurrent_calls == 3
    (tmp_path / "engine.yaml").write_text("max_concurrent_calls: 7\n")
    assert load_app(f"{app_file}:capped").max_concurrent_calls == 7
