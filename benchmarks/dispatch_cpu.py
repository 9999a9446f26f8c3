"""The scheduler's own CPU per call, without processes, containers or sockets.

The whole `Scheduler` (graph, pools, dispatch, group commit to a SQLite store in a temporary
directory) drives the fan-out `fanout(n)` → `total(*[work(i) for i in range(n)])` on the unit
tests' fake backend (`tests/unit/fakebackend.py`): its executors answer on the scheduler's own
event loop, every message still serialised both ways. What is measured is this process's CPU
time (`time.process_time`) from the run's submission to its end, divided by the calls: the
scheduler's per-call cost plus the fake executors' (the same for any two source trees), with no
executor start-up and far less sensitivity to the machine's load than wall times. The fan-out's
tail call stays within `TAIL_SLICE` (500) futures, `--calls` and its `total`: the fake backend
does not serve the executors that `Dispatcher.prestart_tail` starts for a larger tail call (its
calls are never answered, and the run never ends).

    python benchmarks/dispatch_cpu.py --calls 450 --repeats 9
    PYTHONPATH=/path/to/other/checkout python benchmarks/dispatch_cpu.py   # that code instead

Prints one JSON object: the CPU seconds of each repeat, their median, and µs per call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "unit"))

from fakebackend import FakeEngine, Fn, call  # noqa: E402


async def one_run(n: int) -> float:
    works = [call("work", i, id=f"w{i}") for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="engine-dispatch-cpu-") as tmp:
        async with FakeEngine(Path(tmp), {
            "fanout": lambda _: call("total", *works, id="total"),
            "work": Fn(lambda c: c.arg * 2, concurrency=16, max_containers=2),
            "total": lambda c: sum(c.args),
        }, idle_timeout=60) as eng:
            start = time.process_time()
            run = eng.submit()
            await eng.finished(run, timeout=600)
            cpu = time.process_time() - start
            if eng.result(run) != n * (n - 1):
                raise SystemExit("dispatch_cpu: wrong result")
            return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=450)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    import engine
    from engine.scheduler.scheduler import TAIL_SLICE

    if args.calls + 1 > TAIL_SLICE:
        parser.error(f"--calls {args.calls}: the tail call would have more than TAIL_SLICE ({TAIL_SLICE}) "
                     "futures, whose prestarted executors the fake backend never serves")

    cpus = [asyncio.run(one_run(args.calls)) for _ in range(args.repeats)]
    median = statistics.median(cpus)
    print(json.dumps({"engine": str(Path(engine.__file__).parent), "calls": args.calls + 2,
                      "cpu_s": [round(c, 3) for c in cpus], "median_cpu_s": round(median, 3),
                      "us_per_call": round(median / (args.calls + 2) * 1e6, 1)}))


if __name__ == "__main__":
    main()
