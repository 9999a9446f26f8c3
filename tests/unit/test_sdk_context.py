"""The SDK's `RequestContext` alone, on a runtime that records what reaches it: where it may be
used, how each mistake in its arguments is refused, and what it hands to the runtime. The
scheduler's side and real executors are covered by tests/integration/test_request_context.py."""

from __future__ import annotations

import math
import pickle
import threading
from typing import Any

import pytest

from engine import FunctionProgress, RequestContext, RequestState, SDKUsageError
from engine.scheduler.context import merge_metrics, metrics_json, visible_headers
from engine.sdk import runtime as rt
from engine.wire.v1 import engine_pb2 as pb


class ContextRuntime(rt.Runtime):
    def __init__(self) -> None:
        self.state: dict[str, Any] = {}
        self.reports: list[tuple[float, float, str | None, dict[str, str] | None]] = []

    def start(self, futures: Any) -> None:  # pragma: no cover - not used here
        raise AssertionError

    def wait(self, futures: Any, timeout: Any, return_when: Any) -> None:  # pragma: no cover
        raise AssertionError

    def headers(self) -> list[tuple[str, str]]:
        return [("X-User", "ada"), ("Accept", "a"), ("accept", "b")]

    def get_state(self, key: str) -> tuple[bool, Any]:
        return (key in self.state, self.state.get(key))

    def set_state(self, key: str, value: Any) -> None:
        self.state[key] = value

    def progress(self, current: float, total: float, message: str | None,
                 attributes: dict[str, str] | None) -> None:
        self.reports.append((current, total, message, attributes))


@pytest.fixture
def call() -> Any:
    runtime = ContextRuntime()
    ctx = rt.CallContext(runtime, "run-1", "call-1", "fn")
    token = rt.enter(ctx)
    yield runtime, ctx
    rt.leave(token)


def test_outside_a_call_get_is_a_usage_error() -> None:
    with pytest.raises(SDKUsageError, match="only inside a function"):
        RequestContext.get()


def test_request_id_headers_and_state(call) -> None:
    runtime, _ = call
    ctx = RequestContext.get()
    assert ctx.request_id == "run-1"
    assert ctx.headers["x-user"] == "ada" and ctx.headers.getlist("ACCEPT") == ["a", "b"]
    assert isinstance(ctx.state, RequestState)
    assert ctx.state.get("k") is None and ctx.state.get("k", 7) == 7
    ctx.state.set("k", {"a": 1})
    assert ctx.state.get("k") == {"a": 1} and runtime.state == {"k": {"a": 1}}
    ctx.state.set("none", None)
    assert ctx.state.get("none", "default") is None  # set to None is not missing


@pytest.mark.parametrize("key", [1, None, b"k", ("k",)])
def test_state_keys_must_be_strings(call, key) -> None:
    state = RequestContext.get().state
    with pytest.raises(SDKUsageError, match="State key must be a string"):
        state.set(key, 1)
    with pytest.raises(SDKUsageError, match="State key must be a string"):
        state.get(key)


def test_progress_reaches_the_runtime(call) -> None:
    runtime, _ = call
    progress = RequestContext.get().progress
    assert isinstance(progress, FunctionProgress)
    progress.update(1, 4)
    progress.update(2.5, 4, "half", {"page": "2"})
    assert runtime.reports == [(1.0, 4.0, None, None), (2.5, 4.0, "half", {"page": "2"})]


@pytest.mark.parametrize("args", [
    ("1", 2), (1, "2"), (True, 2), (1, False), (-1, 2), (1, -0.5), (math.nan, 1), (1, math.inf),
    (10**400, 1), (1, 2, 3), (1, 2, "m", {"k": 1}), (1, 2, "m", {1: "v"}), (1, 2, "m", [("k", "v")]),
])
def test_progress_arguments_are_checked(call, args) -> None:
    runtime, _ = call
    with pytest.raises(SDKUsageError):
        RequestContext.get().progress.update(*args)
    assert runtime.reports == []


def test_metrics_accumulate_in_the_call(call) -> None:
    _, ctx = call
    metrics = RequestContext.get().metrics
    metrics.counter("pages")
    metrics.counter("pages", 4)
    metrics.timer("ocr", 2)
    metrics.timer("ocr", 0.5)
    assert ctx.metrics.counters == {"pages": 5}
    assert ctx.metrics.timers == {"ocr": [2, 2.5, 0.5, 2.0]}


@pytest.mark.parametrize("call_args", [
    ("counter", (1,)), ("counter", ("n", 1.5)), ("counter", ("n", True)),
    ("timer", (1, 1.0)), ("timer", ("t", "1")), ("timer", ("t", math.inf)), ("timer", ("t", False)),
])
def test_metric_arguments_are_checked(call, call_args) -> None:
    method, args = call_args
    with pytest.raises(SDKUsageError):
        getattr(RequestContext.get().metrics, method)(*args)


def test_context_objects_refuse_to_be_pickled(call) -> None:
    ctx = RequestContext.get()
    for obj in (ctx, ctx.state, ctx.progress, ctx.metrics):
        with pytest.raises(SDKUsageError, match="cannot be pickled"):
            pickle.dumps(obj)


def test_a_thread_started_by_the_only_running_call_sees_its_context(call) -> None:
    _, ctx = call
    rt.set_process_default(ctx)
    seen: list[str] = []
    try:
        t = threading.Thread(target=lambda: seen.append(RequestContext.get().request_id))
        t.start()
        t.join()
    finally:
        rt.set_process_default(None)
    assert seen == ["run-1"]


def test_credentials_and_connection_headers_are_hidden() -> None:
    pairs = [("Authorization", "Bearer x"), ("Cookie", "a=1"), ("Content-Length", "3"),
             ("X-User", "ada"), ("content-type", "application/json")]
    assert visible_headers(pairs) == [("X-User", "ada"), ("content-type", "application/json")]


def test_metrics_of_attempts_add_up() -> None:
    first = pb.CallMetrics(counters={"n": 2})
    first.timers["t"].CopyFrom(pb.TimerStats(count=1, sum=1.0, min=1.0, max=1.0))
    second = pb.CallMetrics(counters={"n": 3, "m": 1})
    second.timers["t"].CopyFrom(pb.TimerStats(count=2, sum=0.5, min=0.2, max=0.3))
    total = merge_metrics(merge_metrics(None, metrics_json(first)), metrics_json(second))
    assert total == {"counters": {"n": 5, "m": 1},
                     "timers": {"t": {"count": 3, "sum": 1.5, "min": 0.2, "max": 1.0}}}
