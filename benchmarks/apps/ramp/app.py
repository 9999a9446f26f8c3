"""Ramp benchmark: `n` calls of `seconds` each, all ready at once; `slow`'s `max_containers`
(engine.yaml beside this file, or `max6.yaml`) lets each have an executor of its own.

How soon the engine reaches its `max_containers` decides the run's length: with every executor
up at once it is just over `seconds`; one executor at a time, `n × seconds`.
"""

from __future__ import annotations

import time

from engine import application, function


@function(timeout=120)
def slow(i: int, seconds: float) -> int:
    time.sleep(seconds)
    return i


@function()
def total(*values: int) -> int:
    return sum(values)


@application()
@function()
def ramp(n: int = 10, seconds: float = 2.0, think: float = 0.0) -> int:
    time.sleep(think)  # an orchestrator that plans first (a model call) before it fans out
    return total.future(*[slow.future(i, seconds) for i in range(n)])  # type: ignore[return-value]
