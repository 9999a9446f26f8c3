"""For test_fair_share.py: `spread(n)` is n `step` calls of 50 ms on one executor of 4 slots,
then a `combine`: a large run drains slowly enough that a small one can be seen overtaking it."""

import time

from engine import application, function


@function(concurrency=4, max_containers=1)
def step(i: int) -> int:
    time.sleep(0.05)
    return i


@function()
def combine(*xs: int) -> int:
    return len(xs)


@application()
@function(warm_containers=1)  # a small run's root does not wait for an executor to start
def spread(n: int) -> int:
    return combine.future(*[step.future(i) for i in range(n)])
