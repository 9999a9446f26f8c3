"""A recursive agent (a function that fans out to itself) for the budget tests: each agent
records its execution, then hands off to `fanout` agents one level deeper and a combiner of
their answers, until `levels`; `blocking_agent` waits for its children instead of handing off
(its futures go through the callback service); `slow_app` outlives any small `max_duration`."""

from __future__ import annotations

import os
import time

from sidefx import record

from engine import application, function


@function()
def combine(*counts: int) -> int:
    return 1 + sum(counts)


@function()
def agent(log: str, level: int, levels: int, fanout: int) -> object:
    record(log, "agent", level)
    if level >= levels:
        return 1
    return combine.future(*[agent.future(log, level + 1, levels, fanout) for _ in range(fanout)])


@application(max_depth=3)
@function()
def agent_app(log: str, levels: int, fanout: int) -> int:
    return agent.future(log, 0, levels, fanout)  # type: ignore[return-value]


@function()
def blocking_agent(log: str, level: int, levels: int, fanout: int) -> int:
    record(log, "blocking", level)
    if level >= levels:
        return 1
    futures = [blocking_agent.future(log, level + 1, levels, fanout) for _ in range(fanout)]
    for future in futures:
        future.run()
    return 1 + sum(future.result() for future in futures)


@application()
@function()
def blocking_app(log: str, levels: int, fanout: int) -> int:
    return blocking_agent(log, 0, levels, fanout)


@function()
def slow(log: str, seconds: float) -> str:
    record(log, "slow-start", os.getpid())
    time.sleep(seconds)
    record(log, "slow-end")
    return "done"


@application()
@function()
def slow_app(log: str, seconds: float) -> str:
    return slow.future(log, seconds)  # type: ignore[return-value]
