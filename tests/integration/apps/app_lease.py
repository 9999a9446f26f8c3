"""A run that waits for the test, for the lease tests: `slow` records when it starts, then
returns only once the file `<log>.go` exists."""

from __future__ import annotations

import os
import time

from sidefx import record

from engine import application, function


@function()
def slow(log: str, i: int) -> int:
    record(log, "start", i)
    deadline = time.monotonic() + 300
    while not os.path.exists(log + ".go") and time.monotonic() < deadline:
        time.sleep(0.05)
    record(log, "end", i)
    return i


@application()
@function()
def lease_app(log: str, n: int = 2) -> int:
    return sum(slow(log, i) for i in range(n))
