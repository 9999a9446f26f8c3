"""An executor's memory between calls (engine/executor/memory.py): one executor of `churn` takes
three calls in turn, the third after `nap` kept it idle; each says what its process held."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from engine import application, function

MB = 1024 * 1024


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


@function(max_containers=1)
def churn(mb: int, after: Any = None) -> dict[str, Any]:
    """Fills `mb` MiB, frees it, and reports the process's resident memory at each step."""
    at_start = rss_mb()
    peak = at_start
    if mb:
        block = b"\x01" * (mb * MB)
        peak = rss_mb()
        del block
    child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('GLIBC_TUNABLES'))"],
                           capture_output=True, text=True, check=True).stdout.strip()
    return {"pid": os.getpid(), "at_start": at_start, "peak": peak, "after_free": rss_mb(),
            "tunables": os.environ.get("GLIBC_TUNABLES"), "child_tunables": child}


@function()
def nap(seconds: float, after: Any = None) -> float:
    import time

    time.sleep(seconds)
    return seconds


@function()
def report(*seen: dict[str, Any]) -> list[dict[str, Any]]:
    return list(seen)


@application()
@function()
def memory_between_calls(mb: int, idle_s: float) -> list[dict[str, Any]]:
    first = churn.future(mb)
    second = churn.future(mb, first)
    rested = nap.future(idle_s, second)
    return report.future(first, second, churn.future(0, rested))  # type: ignore[return-value]
