"""The executor's threads alone: N calls of 200 ms arriving at once, handed to threads in one
process, with no gRPC and no scheduler (the research tree's 1,000 leaves, `one_executor.yaml`).

For each way of running them — `concurrent.futures.ThreadPoolExecutor` (what the executor used
before) and the executor's `_CallThreads` — and each GIL switch interval (Python's 5 ms, the
executor's 50 ms), in turns, `--repeats` times: how long handing the N calls over took, when the
last one was answered (ideal: 200 ms), and the process's CPU meanwhile. Each call does what a
leaf does besides waiting: it pickles a small object, and its answer goes on one queue, which
the main thread drains (the executor's `Calls` stream). Every round starts with fresh threads;
the same calls again on the threads left idle are reported as `again`. Reports; asserts nothing.

    python benchmarks/call_threads.py [--calls 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import queue
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.executor.server import _CallThreads  # noqa: E402

NODE = {"question": "q / part 1 / part 2 / part 3", "depth": 3, "answer": "an answer to: q"}


def call(_request: Any) -> bytes:
    time.sleep(0.2)  # the model
    return pickle.dumps(NODE)


def wave(submit: Any, answers: queue.SimpleQueue[bytes], n: int) -> dict[str, float]:
    cpu, t0 = time.process_time(), time.perf_counter()
    for i in range(n):
        submit(i)
    handed = time.perf_counter() - t0
    for _ in range(n):
        answers.get()
    return {"handed_ms": handed * 1000, "answered_ms": (time.perf_counter() - t0) * 1000,
            "cpu_ms": (time.process_time() - cpu) * 1000}


def one(pool: str, interval: float, n: int) -> dict[str, Any]:
    sys.setswitchinterval(interval)
    answers: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    if pool == "ThreadPoolExecutor":
        tpe = ThreadPoolExecutor(max_workers=n)

        def submit(request: Any) -> None:
            tpe.submit(lambda: answers.put(call(request)))
        close = lambda: tpe.shutdown(wait=True)  # noqa: E731
    else:
        threads = _CallThreads(n, lambda request: answers.put(call(request)))
        submit, close = threads.submit, threads.close
    try:
        return {"fresh": wave(submit, answers, n), "again": wave(submit, answers, n)}
    finally:
        close()
        time.sleep(0.3)  # the threads end before the next round starts its own


def cell(runs: list[dict[str, Any]], wave_: str, key: str) -> str:
    v = [r[wave_][key] for r in runs]
    return f"{statistics.median(v):.0f} ({min(v):.0f}–{max(v):.0f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cases = [(pool, interval) for interval in (0.005, 0.05) for pool in ("ThreadPoolExecutor", "_CallThreads")]
    rows: dict[str, list[dict[str, Any]]] = {f"{p} {i * 1000:g} ms": [] for p, i in cases}
    for _ in range(args.repeats):
        for pool, interval in cases:
            rows[f"{pool} {interval * 1000:g} ms"].append(one(pool, interval, args.calls))
    print(f"{args.calls} calls of 200 ms at once; medians of {args.repeats} (min–max); "
          f"load {os.getloadavg()[0]:.1f}")
    print("| threads, switch interval | handed over, ms | last answered, ms | CPU, ms | again: answered, CPU |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, runs in rows.items():
        print(f"| {name} | {cell(runs, 'fresh', 'handed_ms')} | {cell(runs, 'fresh', 'answered_ms')} | "
              f"{cell(runs, 'fresh', 'cpu_ms')} | {cell(runs, 'again', 'answered_ms')}, "
              f"{cell(runs, 'again', 'cpu_ms')} |")
    print(json.dumps({"calls": args.calls, "runs": rows}), file=sys.stderr)


if __name__ == "__main__":
    main()
