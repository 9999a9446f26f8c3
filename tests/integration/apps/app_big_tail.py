"""A tail call too large to add in one loop turn (`Scheduler._add_tail` adds it in slices), for
killing the engine while it is being added."""

from __future__ import annotations

from sidefx import record

from engine import application, function


@function(concurrency=16, max_containers=2)
def work(i: int, log: str) -> int:
    record(log, "work", i)
    return i * 2


@function()
def total(*xs: int) -> int:
    return sum(xs)


@application()
@function()
def big_tail(n: int, log: str) -> int:
    record(log, "root")
    return total.future(*[work.future(i, log) for i in range(n)])
