"""A fan-out whose trace the tracing tests check (tests/integration/test_tracing.py): the root
fans out to `n` children and hands off to a combiner by tail call; child 0 makes a blocking call
of its own, child 1 fails once and is retried, child 2 makes a span of its own with the
OpenTelemetry API (when the executor has it: the runtime image does not), child 3 maps over two
items. And a run that a RequestError ends while another call is still running (`trace_fails`)."""

from __future__ import annotations

import time

from engine import RequestContext, RequestError, Retries, application, function


@application()
@function()
def trace_root(n: int) -> int:
    return combine.future(*[child.future(i) for i in range(n)])


@function(retries=Retries(max_retries=2, initial_delay=0.2, delay_multiplier=1))
def child(i: int) -> int:
    if i == 0:
        return leaf(100)
    if i == 1:
        # The run's durable state, not a file: an executor in a container sees no host path.
        state = RequestContext.get().state
        if not state.get("child 1 failed", False):
            state.set("child 1 failed", True)
            raise ValueError("child 1 fails on its first attempt")
    if i == 2:
        try:
            from opentelemetry import trace
        except ImportError:
            return i
        with trace.get_tracer("app_tracing").start_as_current_span("user work") as span:
            span.set_attribute("app.child", i)
            return i
    if i == 3:
        return sum(leaf.map([1, 2]))
    return i


@function()
def leaf(x: int) -> int:
    return x


@function()
def combine(*values: int) -> int:
    return sum(values)


@application()
@function()
def trace_fails() -> int:
    return combine.future(refuse.future(), slow.future())


@function()
def slow() -> int:
    RequestContext.get().state.set("slow started", True)
    time.sleep(60)  # cancelled when the run fails
    return 0


@function()
def refuse() -> int:
    state = RequestContext.get().state
    deadline = time.monotonic() + 30
    while not state.get("slow started", False) and time.monotonic() < deadline:
        time.sleep(0.05)
    raise RequestError("refused")
