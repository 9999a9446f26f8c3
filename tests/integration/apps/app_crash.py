"""Many parallel calls of staggered length, for killing the engine mid-run."""

from __future__ import annotations

import time

from sidefx import record

from engine import application, function


@function(concurrency=10)
def work(i: int, log: str, step: float) -> int:
    record(log, "start", i)
    time.sleep(0.3 + step * i)
    record(log, "end", i)
    return i * i


@function()
def gather(*values: int) -> int:
    return sum(values)


@application()
@function()
def crash_app(n: int, log: str, step: float = 0.12) -> int:
    """n calls; call i takes 0.3 + step * i seconds, so they finish one after another."""
    record(log, "root")
    return gather.future(*[work.future(i, log, step) for i in range(n)])
