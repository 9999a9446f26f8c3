"""The SDK without any runtime: decorators, retry policy, call ids, futures outside a request."""

from __future__ import annotations

import asyncio
import dataclasses
import pickle
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
from engine.errors import EngineError, InputError
from engine.sdk import runtime as rt
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


def test_application_without_function_is_refused() -> None:
    def bare(x: int) -> int:
        return x

    with pytest.raises(SDKUsageError, match=r"above @function"):
        application()(bare)


def test_application_below_function_is_refused() -> None:
    # @function() above @application(): application receives a plain function.
    with pytest.raises(SDKUsageError, match=r"above @function"):
        function()(application()(lambda x: x))


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


def test_result_timeout_raises_builtin_timeout_error() -> None:
    runtime, token = _in_call()
    try:
        never = plain_fn.future(1)  # RecordingRuntime never resolves plain_fn
        with pytest.raises(TimeoutError):
            never.result(timeout=0.01)
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


def test_map_items_must_be_a_list_or_future() -> None:
    for bad in ("abc", b"abc", 5, None):
        with pytest.raises(SDKUsageError, match="list"):
            inc.future.map(bad)  # type: ignore[arg-type]
    with pytest.raises(SDKUsageError, match="list"):
        inc.future.reduce(7, 0)  # type: ignore[arg-type]


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
    with pytest.raises(InputError):
        run_local_application(an_app, 1, 2)
    # Nothing was started: the state directory holds no run.
    assert not (state_dir / "engine.db").exists()
    assert issubclass(InputError, EngineError)
