"""Resume benchmark: `branches(n)` fans out to `branch(i)` n times, each sleeping 50 ms, and sums.

`run.py` starts `branches(1000)`, SIGKILLs the engine process once about half of the branches
have succeeded, reads the store, runs `engine resume RUN_ID`, and reports how long the resume
took and how many calls that had finished before the kill executed again (it must be 0).
`engine.yaml` caps `branch` at 2 executors × 8 calls, so the run lasts a few seconds and the kill
lands in the middle.
"""

from __future__ import annotations

import time

from engine import application, function

BRANCH_SECONDS = 0.05


@function()
def branch(i: int) -> int:
    time.sleep(BRANCH_SECONDS)
    return i


@function()
def total(*xs: int) -> int:
    return sum(xs)


@application()
@function()
def branches(n: int) -> int:
    return total.future(*[branch.future(i) for i in range(n)])  # type: ignore[return-value]
