"""Fan-out benchmark: `fanout(n)` runs `work(i)` n times in parallel and sums the results.

`fanout` returns one tail call, `total(*[work(i) for i in range(n)])`, so a run is n + 2 calls:
the root, n `work` calls and one `total`. Every call is trivial on purpose: what is measured is
the engine's per-call overhead (scheduling, gRPC round trips, checkpoints), not user code.

`work` runs in at most 2 executors — as many as Ray's local cluster has worker processes with
`num_cpus=2` — each serving up to 16 calls at once, so round trips overlap instead of one call
per executor at a time. `run.py` records these settings beside the numbers (and can override them
with an engine.yaml, see `--work-concurrency` / `--work-max-containers`).
"""

from engine import application, function


@function(concurrency=16, max_containers=2)
def work(i: int) -> int:
    return i * 2


@function()
def total(*xs: int) -> int:
    return sum(xs)


@application()
@function()
def fanout(n: int) -> int:
    return total.future(*[work.future(i) for i in range(n)])
