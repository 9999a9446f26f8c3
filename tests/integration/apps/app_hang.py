"""Calls that never return (or take longer than an executor's orphan grace period), for the
tests of executors that must not outlive their engine (test_orphans.py). Runs on the process and
the docker backend: `log` is a path where the executor runs (inside the container on docker)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from sidefx import record

from engine import application, function


def executor_identity() -> str:
    """Which executor ran a call: the container (hostname) and the process."""
    return f"{socket.gethostname()}:{os.getpid()}"


@function()
def quick(i: int) -> str:
    return executor_identity()


@function()
def hang(log: str) -> int:
    """Never returns: a call that only the death of its executor ends. It starts a process of
    its own too, which must not outlive the executor either."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    record(log, "hang", executor_identity(), child.pid)
    while True:
        time.sleep(1)


@application()
@function()
def hang_app(log: str) -> int:
    """Three executors when the hanging call starts: this one (waiting on `hang`), `quick`'s
    (idle) and `hang`'s (busy forever)."""
    quick(1)
    return hang(log)


@function()
def slow(log: str, seconds: float) -> str:
    record(log, "slow", executor_identity())
    time.sleep(seconds)
    return executor_identity()


@application()
@function()
def slow_app(log: str, seconds: float) -> list[str]:
    """A call longer than the grace period, while `quick`'s executor idles as long: both must
    live on. Returns the executors of quick, slow, quick again."""
    first = quick(1)
    during = slow(log, seconds)
    return [first, during, quick(2)]


@application()
@function()
def quick_app(i: int) -> str:
    return quick(i)
