"""An application the dashboard test deploys: a fan-out in which one call fails its first two
attempts and succeeds on the third (retried by its policy), so that the timeline has failed
attempts to draw. Executions are counted in a file whose path the test passes in.
"""

from __future__ import annotations

import os
import time

from engine import Retries, application, function


def _executions(log: str, tag: str) -> int:
    """Record one execution of `tag` and return how many there were, this one included."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{tag}\n".encode())
    finally:
        os.close(fd)
    with open(log) as fh:
        return sum(1 for line in fh if line.rstrip("\n") == tag)


@function(retries=Retries(max_retries=3, initial_delay=0.2, delay_multiplier=1.0))
def flaky(i: int, log: str) -> int:
    time.sleep(0.1 * (i + 1))  # bars of different lengths
    if i == 0 and _executions(log, f"flaky-{i}") <= 2:
        raise RuntimeError(f"item {i} fails its first two attempts")
    return i


@function()
def add(*values: int) -> int:
    return sum(values)


@application()
@function()
def retried(n: int, log: str) -> int:
    """n calls of `flaky` (the first fails twice, then succeeds), then their sum (a tail call)."""
    return add.future(*[flaky.future(i, log) for i in range(n)])
