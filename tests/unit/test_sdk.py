"""The SDK without any runtime: decorators, retry policy, call ids, futures outside a request."""

from __future__ import annotations

import asyncio
import dataclasses
import pickle
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from engine import (
    RETURN_WHEN,
    Function,
    Future,
    Retries,
    SDKUsageError,
    application,
    function,
    run_local_application,
)
from engine.errors import EngineError, InputError, SerializationError
from engine.sdk import runtime as rt
from engine.sdk.function import ApplicationConfig, PendingApplication
from engine.sdk.function import registered as rt_registered
from engine.sdk.future import dependencies


@function()
def inc(x: int) -> int:
    return x + 1


@function()
async def ainc(x: int) -> int:
    return x + 1


@function()
def plain_fn(x: int) -> int:
    return x


@application()
@function()
def an_app(x: int) -> int:
    return x


@function(timeout=7, region="us-east-1")
@application(tags={"team": "search"}, retries=Retries(max_retries=2), region="eu-west-1",
             allow=["unauthenticated_requests"])
def app_below(x: int) -> int:
    return x


# --- decorator validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"cpu": 0}, "cpu"),
        ({"cpu": -1}, "cpu"),
        ({"memory": 0}, "memory"),
        ({"ephemeral_disk": -5}, "ephemeral_disk"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": 8 * 24 * 3600}, "timeout"),
        ({"timeout": "soon"}, "timeout"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 1001}, "concurrency"),
        ({"max_containers": 0}, "max_containers"),
        ({"min_containers": -1}, "min_containers"),
        ({"warm_containers": -1}, "warm_containers"),
        ({"retries": 3}, "retries"),
    ],
)
def test_function_rejects_bad_values(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(SDKUsageError, match=field):
        function(**kwargs)


def test_function_keeps_valid_values() -> None:
    assert isinstance(tuned, Function)
    c = tuned.config
    assert (c.cpu, c.memory, c.timeout, c.concurrency, c.max_containers) == (0.5, 2, 30, 4, 3)
    assert c.retries == Retries(max_retries=2, initial_delay=0.1)
    d = inc.config
    assert (d.cpu, d.memory, d.timeout, d.concurrency, d.retries) == (1.0, 1.0, 300, 1, None)


@function(cpu=0.5, memory=2, timeout=30, concurrency=4,
          retries=Retries(max_retries=2, initial_delay=0.1), max_containers=3)
def tuned(x: int) -> int:
    return x


def test_nested_function_is_refused() -> None:
    with pytest.raises(SDKUsageError, match="module level"):

        @function()
        def nested(x: int) -> int:
            return x


def test_application_without_function_is_not_runnable(state_dir: Any) -> None:
    def bare(x: int) -> int:
        return x

    pending = application()(bare)
    assert isinstance(pending, PendingApplication) and not isinstance(pending, Function)
    assert pending.__name__ == "bare"
    with pytest.raises(SDKUsageError, match=r"@function\(\)"):
        pending(1)
    with pytest.raises(SDKUsageError, match=r"no @function\(\)"):
        run_local_application(pending, 1)  # type: ignore[arg-type]


def test_application_and_function_stack_in_either_order() -> None:
    for fn in (an_app, app_below):
        assert isinstance(fn, Function) and fn.is_application
        assert rt_registered(fn.name) is fn
    assert an_app.application == ApplicationConfig()
    cfg = app_below.application
    assert cfg is not None
    assert (cfg.tags, cfg.retries, cfg.region, cfg.allow) == (
        {"team": "search"}, Retries(max_retries=2), "eu-west-1", ["unauthenticated_requests"])
    # The @function() settings are kept whichever decorator is outermost.
    assert app_below.config.timeout == 7 and app_below.config.region == "us-east-1"


def test_application_applied_twice_is_refused() -> None:
    with pytest.raises(SDKUsageError, match="twice"):
        application()(an_app)
    with pytest.raises(SDKUsageError, match="twice"):
        application()(application()(_plain))


def _plain(x: int) -> int:
    return x


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"tags": {"a": 1}}, "tags"),
        ({"tags": ["a"]}, "tags"),
        ({"retries": 3}, "retries"),
        ({"region": "us east"}, "region"),
        ({"region": 5}, "region"),
        ({"allow": ["everything"]}, "allow"),
        ({"allow": "unauthenticated_requests"}, "allow"),
    ],
)
def test_application_rejects_bad_values(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(SDKUsageError, match=field):
        application(**kwargs)


def test_function_region_is_checked() -> None:
    assert function(region="eu-west-1") is not None
    for bad in ("", "a b", "x==y", 3):
        with pytest.raises(SDKUsageError, match="region"):
            function(region=bad)  # type: ignore[arg-type]


REGION_APP = """
from engine import Retries, application, function


@function(region="us-east-1")
def pinned(x: int) -> int:
    return x


@function()
def roaming(x: int) -> int:
    return x


@function(timeout=9)
@application(tags={"owner": "me"}, region="eu-west-1", retries=Retries(max_retries=3))
def main(x: int) -> int:
    return pinned.future(roaming.future(x))
"""


def test_region_becomes_a_placement_constraint(tmp_path: Path) -> None:
    from engine.app import load_app

    path = tmp_path / "regionapp_sdk.py"
    path.write_text(REGION_APP)
    (tmp_path / "engine.yaml").write_text(
        "functions: {roaming: {constraints: ['node.labels.gpu==true']}}\n")
    app = load_app(f"{path}:main")
    assert app.function.is_application and app.function.config.timeout == 9
    # The function's own region wins over the application's; engine.yaml's constraints stay.
    assert app.functions["pinned"].constraints == ("node.labels.region==us-east-1",)
    assert app.functions["roaming"].constraints == (
        "node.labels.gpu==true", "node.labels.region==eu-west-1")
    assert app.functions["main"].constraints == ("node.labels.region==eu-west-1",)
    # The application's retries are the default of every function that sets none.
    assert app.functions["pinned"].retries == Retries(max_retries=3)
    assert app.function.application is not None
    assert app.function.application.tags == {"owner": "me"}


def test_application_decorated_without_function_is_refused_at_load(tmp_path: Path) -> None:
    from engine.app import load_app

    path = tmp_path / "pendingapp_sdk.py"
    path.write_text("from engine import application\n\n@application()\ndef main(x: int) -> int:\n"
                    "    return x\n")
    with pytest.raises(SDKUsageError, match=r"not decorated with @function\(\)"):
        load_app(f"{path}:main")


def test_function_applied_twice_is_refused() -> None:
    with pytest.raises(SDKUsageError, match="twice"):
        function()(inc)


def test_function_on_a_non_function_is_refused() -> None:
    with pytest.raises(SDKUsageError):
        function()(42)  # type: ignore[arg-type]


def test_application_parameters_must_be_plain() -> None:
    with pytest.raises(SDKUsageError, match="args"):
        application()(Function(_star_args, inc.config))


def _star_args(*args: int) -> int:
    return 0


def test_function_identity_and_pickling_by_name() -> None:
    assert inc.name == "inc"
    assert inc.__name__ == "inc" and inc.__doc__ == inc.fn.__doc__
    assert not inc.is_application and an_app.is_application
    assert inc.is_async is False and ainc.is_async is True
    assert pickle.loads(pickle.dumps(inc)) is inc
    assert cloudpickle.loads(cloudpickle.dumps(inc)) is inc
    with pytest.raises(SDKUsageError):
        pickle.dumps(inc.future)


# --- Retries -----------------------------------------------------------------------------------


def test_retries_defaults() -> None:
    r = Retries()
    assert (r.max_retries, r.initial_delay, r.max_delay, r.delay_multiplier) == (0, 1.0, 60.0, 2.0)
    assert Retries(3).max_retries == 3


def test_retries_delay_is_exponential_and_capped() -> None:
    r = Retries(max_retries=10, initial_delay=0.5, delay_multiplier=3, max_delay=10)
    assert [r.delay(n) for n in range(1, 6)] == [0.5, 1.5, 4.5, 10, 10]
    assert r.delay(0) == 0.0
    flat = Retries(max_retries=5, initial_delay=0.2, delay_multiplier=1)
    assert [flat.delay(n) for n in (1, 2, 5)] == [0.2, 0.2, 0.2]


def test_retries_are_frozen() -> None:
    r = Retries(2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.max_retries = 5  # type: ignore[misc]


def test_retries_rejects_bad_values_with_usage_error() -> None:
    with pytest.raises(TypeError):  # an unknown keyword, as for any Python callable
        Retries(backoff=2.0)  # type: ignore[call-arg]
    for kwargs in ({"max_retries": -1}, {"initial_delay": -1.0}, {"delay_multiplier": 0.5},
                   {"max_retries": 101}, {"max_retries": 1.5}):
        try:
            Retries(**kwargs)
        except SDKUsageError:
            continue
        except Exception as exc:  # noqa: BLE001
            raise AssertionError(f"Retries({kwargs}) raised {type(exc).__name__}") from None
        raise AssertionError(f"Retries({kwargs}) was accepted")


# --- call ids ----------------------------------------------------------------------------------


def test_child_id_is_deterministic_and_sensitive_to_every_input() -> None:
    base = rt.child_id("parent", 0, "call", "f")
    assert base == rt.child_id("parent", 0, "call", "f")
    assert base.startswith("c") and len(base) == 24
    int(base[1:], 16)
    variants = {
        rt.child_id("parent2", 0, "call", "f"),
        rt.child_id("parent", 1, "call", "f"),
        rt.child_id("parent", 0, "map", "f"),
        rt.child_id("parent", 0, "call", "g"),
    }
    assert base not in variants and len(variants) == 4


def test_child_id_is_stable_across_processes() -> None:
    # Resume happens in another process: the id must not depend on hash seeds or memory.
    import subprocess
    import sys

    code = "from engine.sdk.runtime import child_id; print(child_id('p', 3, 'reduce', 'f'))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={"PYTHONHASHSEED": seed, "PATH": ""}, check=True).stdout.strip()
            for seed in ("1", "2")}
    assert outs == {rt.child_id("p", 3, "reduce", "f")}


class RecordingRuntime(rt.Runtime):
    """A runtime that records what the SDK asks of it and resolves futures on wait."""

    def __init__(self) -> None:
        self.started: list[list[str]] = []
        self.waits: list[tuple[list[str], float | None, RETURN_WHEN]] = []

    def start(self, futures: Sequence[Future]) -> None:
        self.started.append([f.id for f in futures])
        for f in futures:
            f._mark_started()

    def wait(self, futures: Sequence[Future], timeout: float | None,
             return_when: RETURN_WHEN) -> None:
        self.waits.append(([f.id for f in futures], timeout, return_when))
        for f in futures:
            if f.function is inc:
                f._resolve(value=f.args[0] + 1)


def _in_call(call_id: str = "parent-call") -> tuple[RecordingRuntime, Any]:
    runtime = RecordingRuntime()
    token = rt.enter(rt.CallContext(runtime, "run-1", call_id, "parent"))
    return runtime, token


def test_futures_get_ids_in_creation_order() -> None:
    ids = []
    for _ in range(2):  # the same parent re-run creates the same ids
        runtime, token = _in_call()
        try:
            ids.append([inc.future(1).id, inc.future.map([1, 2]).id,
                        inc.future.reduce([1], 0).id])
        finally:
            rt.leave(token)
    assert ids[0] == ids[1]
    assert ids[0] == [rt.child_id("parent-call", 0, "call", "inc"),
                      rt.child_id("parent-call", 1, "map", "inc"),
                      rt.child_id("parent-call", 2, "reduce", "inc")]


def test_future_outside_a_call_has_a_detached_id() -> None:
    a, b = inc.future(1), inc.future(1)
    assert a.id.startswith("f") and a.id != b.id


def test_sdk_talks_only_to_the_runtime() -> None:
    runtime, token = _in_call()
    try:
        assert inc(4) == 5  # calling blocks on the runtime
        fut = inc.future(10).run()
        assert fut.started and not fut.done()
        assert fut.result(timeout=2) == 11
        done, not_done = Future.wait([inc.future(1)], timeout=3,
                                     return_when=RETURN_WHEN.FIRST_COMPLETED)
        assert len(done) == 1 and not_done == []
    finally:
        rt.leave(token)
    assert runtime.waits[-1][1:] == (3, RETURN_WHEN.FIRST_COMPLETED)
    assert len(runtime.started) == 3


def test_result_timeout_raises_our_timeout_error_which_is_the_builtin_too() -> None:
    import builtins

    import engine

    runtime, token = _in_call()
    try:
        never = plain_fn.future(1)  # RecordingRuntime never resolves plain_fn
        with pytest.raises(engine.TimeoutError) as caught:
            never.result(timeout=0.01)
        assert isinstance(caught.value, builtins.TimeoutError)
        assert not never.done()
    finally:
        rt.leave(token)


def test_dependencies_are_found_in_args_lists_and_kwargs() -> None:
    a, b, c = inc.future(1), inc.future(2), inc.future(3)
    user = plain_fn.future(a, [b, 5], key=c)
    assert set(map(id, dependencies(user))) == {id(a), id(b), id(c)}


# --- futures cannot hide inside values --------------------------------------------------------


def test_future_pickling_is_refused() -> None:
    fut = inc.future(1)
    with pytest.raises(SDKUsageError, match="cannot be stored"):
        pickle.dumps(fut)
    with pytest.raises(SDKUsageError):
        cloudpickle.dumps({"nested": [fut]})


def test_future_nested_in_a_dict_argument_is_refused_at_submission(tmp_path: Path) -> None:
    from engine.executor.runtime import GraphEncoder
    from engine.store import open_store, store_url

    outer = plain_fn.future({"x": inc.future(1)})
    store = open_store(store_url(tmp_path))
    with pytest.raises(SDKUsageError):
        GraphEncoder(store).add(outer)
    store.close()


def test_map_and_reduce_take_any_iterable() -> None:
    # As in Tensorlake: any iterable, read once into a list when the future is made.
    a = inc.future(1)
    cases: list[tuple[Any, list[Any]]] = [
        (lambda: [1, 2], [1, 2]),
        (lambda: (1, 2), [1, 2]),
        (lambda: range(3), [0, 1, 2]),
        (lambda: (x * 2 for x in range(3)), [0, 2, 4]),
        (lambda: {"k": 1}, ["k"]),
        (lambda: "ab", ["a", "b"]),
        (lambda: iter([a, 5]), [a, 5]),
    ]
    for make, expected in cases:
        assert inc.future.map(make()).args == (expected,)
        assert inc.future.reduce(make(), 0).args == (expected, 0)
        assert inc.future.reduce(make()).args == (expected,)
    assert inc.future.map({3}).args == ([3],)
    # A future (of a list) is kept as the items, to be expanded when it has its value.
    listing = plain_fn.future(1)
    assert inc.future.map(listing).args[0] is listing
    assert list(dependencies(inc.future.map((a, 2)))) == [a]


def test_map_items_must_be_iterable() -> None:
    for bad in (5, None, 1.5):
        with pytest.raises(SDKUsageError, match="iterable"):
            inc.future.map(bad)  # type: ignore[arg-type]
    with pytest.raises(SDKUsageError, match="iterable"):
        inc.future.reduce(7, 0)  # type: ignore[arg-type]


def test_coroutines_and_tasks_of_async_calls_are_their_futures() -> None:
    async def main() -> None:
        coro = ainc(1)
        fut = inc.future.map([coro]).args[0][0]
        assert isinstance(fut, Future) and fut.function is ainc
        task = asyncio.get_running_loop().create_task(_never())
        task.cancel()
        assert inc.future.map([task]).args[0][0] is task  # not one of ours: a plain value

    asyncio.run(main())


async def _never() -> None:
    await asyncio.sleep(3600)


# --- outside a request ---------------------------------------------------------------------------


def test_calling_outside_a_request_is_a_usage_error() -> None:
    with pytest.raises(SDKUsageError, match="running request"):
        inc(1)
    with pytest.raises(SDKUsageError, match="running request"):
        inc.future(1).result()
    with pytest.raises(SDKUsageError, match="running request"):
        inc.future(1).run()
    with pytest.raises(SDKUsageError, match="running request"):
        Future.wait([inc.future(1)])
    with pytest.raises(SDKUsageError, match="running request"):
        inc.map([1, 2])
    with pytest.raises(SDKUsageError, match="running request"):
        asyncio.run(ainc(1))


def test_run_local_application_validates_before_running(state_dir: Any) -> None:
    with pytest.raises(SDKUsageError, match="not an application"):
        run_local_application(plain_fn, 1)
    with pytest.raises(SDKUsageError, match="no @function"):
        run_local_application("no_such_function_anywhere", 1)
    with pytest.raises(InputError, match="x"):
        run_local_application(an_app, "not a number")
    with pytest.raises(InputError, match="given twice"):
        run_local_application(an_app, 1, x=2)
    # Nothing was started: the state directory holds no run.
    assert not (state_dir / "engine.db").exists()
    assert issubclass(InputError, EngineError)


def test_an_input_that_does_not_fit_its_hint_is_a_serialization_error(state_dir: Any) -> None:
    # Tensorlake reports an application input that cannot take its type hint's form as a
    # SerializationError; ours is an InputError, which is one.
    with pytest.raises(SerializationError, match="input field x"):
        run_local_application(an_app, ["not", "an", "int"])
    assert issubclass(InputError, SerializationError) and issubclass(InputError, SDKUsageError)


def test_input_beyond_the_parameters_is_ignored_and_said(capsys: pytest.CaptureFixture[str]) -> None:
    from engine.client import _drop_unknown_input

    assert _drop_unknown_input(an_app, (1, 2, 3), {"y": 4}) == ((1,), {})
    err = capsys.readouterr().err
    assert "an_app ignores 2 extra positional argument(s) and keyword(s) 'y'" in err
    assert "(it takes: x)" in err
    # Nothing to drop: nothing said, nothing changed.
    assert _drop_unknown_input(an_app, (), {"x": 1}) == ((), {"x": 1})
    assert capsys.readouterr().err == ""


def test_a_future_nested_in_a_value_does_not_pickle() -> None:
    import pickle

    fut = inc.future(1)
    with pytest.raises(SerializationError, match="cannot be stored inside another value"):
        pickle.dumps({"nested": fut})


# --- Tensorlake's Future surface: run once, run_later, coroutine, wait's checks ---------------


class TimedRuntime(rt.Runtime):
    """Submits as the executor's GraphEncoder does (dependencies first, asking each `.started`),
    records when each future was submitted, and resolves `inc` calls on wait; waits for
    anything else block until their timeout, as a real scheduler's would."""

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.at: dict[str, float] = {}
        self.refuse: set[str] = set()
        self.lock = threading.Lock()

    def start(self, futures: Sequence[Future]) -> None:
        for f in futures:
            if f.id in self.refuse:
                raise SDKUsageError(f"the scheduler refused {f.id}")
        for f in futures:
            self._add(f)

    def _add(self, fut: Future) -> None:
        if fut.started:
            return
        fut._mark_started()
        for dep in dependencies(fut):
            self._add(dep)
        with self.lock:
            self.submitted.append(fut.id)
            self.at[fut.id] = time.monotonic()

    def wait(self, futures: Sequence[Future], timeout: float | None,
             return_when: RETURN_WHEN) -> None:
        resolved = False
        for f in futures:
            if f.function is inc and f.id in self.at and not f.done():
                arg = f.args[0]
                f._resolve(value=(arg.result() if isinstance(arg, Future) else arg) + 1)
                resolved = True
        if not resolved and timeout is not None:
            time.sleep(timeout)


def _timed_call() -> tuple[TimedRuntime, Any]:
    runtime = TimedRuntime()
    return runtime, rt.enter(rt.CallContext(runtime, "run-1", "timed-call", "parent"))


@pytest.fixture
def timed() -> Any:
    runtime, token = _timed_call()
    yield runtime
    rt.leave(token)


def test_a_second_run_is_a_usage_error(timed: TimedRuntime) -> None:
    fut = inc.future(1).run()
    with pytest.raises(SDKUsageError, match="already started"):
        fut.run()
    with pytest.raises(SDKUsageError, match="already started"):
        fut.run_later(1)
    waited = inc.future(2)
    assert waited.result() == 3
    with pytest.raises(SDKUsageError, match="already started"):
        waited.run()
    # Started only as a dependency: one run() is allowed (a no-op), as in Tensorlake.
    dep = inc.future(3)
    plain_fn.future(dep).run()
    assert dep.started
    assert dep.run() is dep
    with pytest.raises(SDKUsageError, match="already started"):
        dep.run()
    assert timed.submitted.count(dep.id) == 1


@pytest.mark.parametrize("delay", [-1, -0.5, float("inf"), float("nan"), True, "1", None])
def test_run_later_validates_its_delay(timed: TimedRuntime, delay: Any) -> None:
    fut = inc.future(1)
    with pytest.raises(SDKUsageError, match="^Future delay must be a non-negative finite number.$"):
        fut.run_later(delay)
    assert timed.submitted == []
    assert fut.run_later(0) is fut  # still runnable after a refused delay


def test_run_later_outside_a_request_is_a_usage_error() -> None:
    with pytest.raises(SDKUsageError, match="running request"):
        inc.future(1).run_later(1)


def test_run_later_starts_no_earlier_than_its_delay(timed: TimedRuntime) -> None:
    t0 = time.monotonic()
    fut = inc.future(1)
    assert fut.run_later(0.3) is fut
    assert time.monotonic() - t0 < 0.1  # it does not block
    assert timed.submitted == [] and "scheduled" in repr(fut)
    assert fut.result() == 2
    assert timed.at[fut.id] - t0 >= 0.3
    assert timed.submitted == [fut.id]


def test_run_later_starts_by_itself_when_due(timed: TimedRuntime) -> None:
    t0 = time.monotonic()
    fut = inc.future(1).run_later(0.1)
    deadline = time.monotonic() + 10
    while fut.id not in timed.at and time.monotonic() < deadline:
        time.sleep(0.01)
    assert timed.submitted == [fut.id] and timed.at[fut.id] - t0 >= 0.1
    assert fut.result() == 2 and timed.submitted == [fut.id]


def test_result_timeout_before_a_delayed_start(timed: TimedRuntime) -> None:
    import builtins

    import engine

    fut = inc.future(1).run_later(30)
    with pytest.raises(engine.TimeoutError, match="did not start"):
        fut.result(timeout=0.05)
    with pytest.raises(builtins.TimeoutError):
        fut.result(timeout=0)
    assert timed.submitted == [] and not fut.done()


def test_a_dependant_of_a_delayed_future_starts_after_it(timed: TimedRuntime) -> None:
    t0 = time.monotonic()
    first = inc.future(1).run_later(0.3)
    second = inc.future(first).run()
    assert time.monotonic() - t0 < 0.1 and timed.submitted == []  # run() does not block
    assert second.result() == 3
    assert timed.submitted == [first.id, second.id]
    assert timed.at[first.id] - t0 >= 0.3


def test_a_runtime_asking_started_waits_for_the_start_time(timed: TimedRuntime) -> None:
    # How a tail call of a delayed future behaves: the executor's encoder asks `.started`.
    t0 = time.monotonic()
    fut = inc.future(1).run_later(0.2)
    assert fut.started is True
    assert time.monotonic() - t0 >= 0.2 and timed.submitted == [fut.id]


def test_a_refused_delayed_start_is_the_futures_failure(timed: TimedRuntime) -> None:
    fut = inc.future(1)
    timed.refuse.add(fut.id)
    fut.run_later(0.05)
    deadline = time.monotonic() + 10
    while not fut.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert isinstance(fut.exception, SDKUsageError)
    with pytest.raises(SDKUsageError, match="refused"):
        fut.result()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"timeout": -1}, "Future.wait timeout must be a non-negative finite number."),
        ({"timeout": float("inf")}, "Future.wait timeout must be a non-negative finite number."),
        ({"timeout": float("nan")}, "Future.wait timeout must be a non-negative finite number."),
        ({"timeout": True}, "Future.wait timeout must be a non-negative finite number."),
        ({"timeout": "3"}, "Future.wait timeout must be a non-negative finite number."),
        ({"return_when": 2}, "Not supported return_when value: '2'"),
        ({"return_when": "ALL_COMPLETED"}, "Not supported return_when value: 'ALL_COMPLETED'"),
    ],
)
def test_wait_checks_its_controls_as_tensorlake_does(timed: TimedRuntime, kwargs: dict[str, Any],
                                                     message: str) -> None:
    fut = inc.future(1)
    with pytest.raises(SDKUsageError) as caught:
        Future.wait([fut], **kwargs)
    assert str(caught.value) == message
    assert timed.submitted == [] and not fut.started


def test_wait_refuses_non_futures_before_starting_any(timed: TimedRuntime) -> None:
    fut = inc.future(1)
    with pytest.raises(SDKUsageError, match="^Cannot run a non-Future object 5.$"):
        Future.wait([fut, 5])  # type: ignore[list-item]
    assert timed.submitted == []
    with pytest.raises(TypeError):
        Future.wait(7)  # type: ignore[arg-type]  # not iterable: list() says so, as in Tensorlake
    done, not_done = Future.wait([fut], timeout=0)
    assert done == [fut] and not_done == []


def test_wait_starts_every_future_and_returns_when_one_is_done(timed: TimedRuntime) -> None:
    a = inc.future(1)
    assert a.result() == 2
    b = plain_fn.future(1)
    done, not_done = Future.wait([a, b], return_when=RETURN_WHEN.FIRST_COMPLETED)
    assert done == [a] and not_done == [b]
    assert b.started and b.id in timed.submitted


def test_wait_over_delayed_futures(timed: TimedRuntime) -> None:
    t0 = time.monotonic()
    quick, slow = inc.future(1), inc.future(2).run_later(0.3)
    done, not_done = Future.wait([quick, slow], return_when=RETURN_WHEN.FIRST_COMPLETED)
    assert done == [quick] and not_done == [slow]
    assert time.monotonic() - t0 < 0.25 and slow.id not in timed.at
    done, not_done = Future.wait([quick, slow])
    assert done == [quick, slow] and not_done == []
    assert timed.at[slow.id] - t0 >= 0.3
    late = plain_fn.future(1).run_later(30)
    t1 = time.monotonic()
    assert Future.wait([late], timeout=0.05) == ([], [late])
    assert 0.05 <= time.monotonic() - t1 < 5 and late.id not in timed.at


def test_coroutine_in_sync_code_says_to_use_result(timed: TimedRuntime) -> None:
    # The wording ported code may compare against (Tensorlake pins it in its own tests): it says
    # what to do instead.
    with pytest.raises(SDKUsageError) as caught:
        inc.future(1).coroutine()
    assert str(caught.value) == (
        "Future.coroutine() can only be called from an async function. "
        "Use Future.result() to get the result in a sync function."
    )


def test_coroutine_is_for_async_code_and_unstarted_futures(timed: TimedRuntime) -> None:
    with pytest.raises(SDKUsageError, match="async function"):
        inc.future(1).coroutine()

    async def main() -> None:
        fut = inc.future(1)
        coro = fut.coroutine()
        assert fut.coroutine() is coro  # the same coroutine while it lives
        assert await coro == 2
        with pytest.raises(SDKUsageError, match="already running"):
            fut.coroutine()
        started = inc.future(5).run()
        with pytest.raises(SDKUsageError, match="already running"):
            started.coroutine()
        # A future's coroutine can stand for it anywhere a Future is taken.
        gathered = await asyncio.gather(inc.future(2).coroutine(), inc.future(3).coroutine())
        assert gathered == [3, 4]

    asyncio.run(main())
