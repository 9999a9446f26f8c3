"""A fan-out with one branch that fails for good while its siblings still work: under
`on_failure="finish"` (the default) the siblings run to completion and are checkpointed before the
run fails, so a resume re-runs only the failed branch; under `"cancel"` they are stopped at once."""

from __future__ import annotations

import os
import time

from sidefx import record

from engine import Retries, application, function


@function(retries=Retries(max_retries=0))
def branch(i: int, log: str, fail: int, flag: str) -> int:
    record(log, "start", i)
    if i == fail and os.path.exists(flag):
        raise ValueError(f"branch {i} failed")
    time.sleep(0.6 + 0.15 * i)  # still working when the failure reaches the root
    record(log, "end", i)
    return i


@function()
def combine(*values: int) -> int:
    return sum(values)


@application()
@function()
def finish_app(n: int, log: str, fail: int, flag: str) -> int:
    return combine.future(*[branch.future(i, log, fail, flag) for i in range(n)])


@application(on_failure="cancel")
@function()
def cancel_app(n: int, log: str, fail: int, flag: str) -> int:
    return combine.future(*[branch.future(i, log, fail, flag) for i in range(n)])
