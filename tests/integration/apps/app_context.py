"""RequestContext on real executors: state shared by a request's functions (a pydantic model
among its values), progress and metrics per call, headers and the request id; and a slow
fan-out whose state writes the crash test checks after `kill -9` and `engine resume`."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel
from sidefx import record

from engine import RequestContext, application, function


class Plan(BaseModel):
    topic: str
    steps: int


@application()
@function()
def context_app(n: int) -> dict[str, Any]:
    ctx = RequestContext.get()
    ctx.state.set("plan", Plan(topic="bees", steps=n))
    ctx.state.set("big", b"x" * 3_000_000)  # travels and is kept as a blob
    ctx.progress.update(0, n, "planned")
    ctx.metrics.counter("plans")
    return collect.future([step.future(i) for i in range(n)])


@function()
def step(i: int) -> int:
    ctx = RequestContext.get()
    plan = ctx.state.get("plan")  # written by the root before this call was created
    ctx.progress.update(1, 1, f"step {i}", {"topic": plan.topic})
    ctx.metrics.counter("steps")
    ctx.metrics.counter("items", 10)
    ctx.metrics.timer("step_seconds", 0.25)
    ctx.state.set(f"step-{i}", {"i": i, "topic": plan.topic})
    return i


@function()
def collect(values: list[int]) -> dict[str, Any]:
    ctx = RequestContext.get()
    return {
        "request_id": ctx.request_id,
        "headers": ctx.headers.multi_items(),
        "plan": ctx.state.get("plan").model_dump(),
        "big": len(ctx.state.get("big")),
        "steps": [ctx.state.get(f"step-{i}") for i in values],
        "missing": ctx.state.get("nope", "default"),
    }


# --- for the crash test --------------------------------------------------------------------------


@application()
@function()
def context_crash(n: int, log: str, pause: float) -> list[Any]:
    record(log, "root")
    RequestContext.get().state.set("plan", Plan(topic="crash", steps=n))
    return gather.future([slow_step.future(i, log, pause) for i in range(n)])


@function()
def slow_step(i: int, log: str, pause: float) -> int:
    ctx = RequestContext.get()
    record(log, "start", i)
    ctx.state.set(f"s{i}", (ctx.state.get("plan").topic, i))
    time.sleep(pause)
    record(log, "end", i)
    return i


@function()
def gather(values: list[int]) -> list[Any]:
    state = RequestContext.get().state
    return [state.get(f"s{i}") for i in values]
