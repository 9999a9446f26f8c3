"""Chain benchmark: `hop(k)` hands off to `hop(k - 1)` by tail call until k is 0.

A run of `hop(k)` is k + 1 sequential calls on one warm executor (a tail call frees its slot at
once, and the next hop is dispatched to the same executor). `run.py` times a k-hop run and a
1-hop run and divides the difference by k - 1: the warm latency of one hop — a result coming back
over gRPC, checkpointed, the next call created, checkpointed and dispatched — without the
executor's start-up.
"""

from engine import application, function


@application()
@function()
def hop(k: int) -> int:
    if k <= 0:
        return 0
    return hop.future(k - 1)  # type: ignore[return-value]
