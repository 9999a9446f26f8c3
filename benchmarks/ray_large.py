"""The large-value workload in Ray, for comparison with `apps/large.py`.

Runs in the peers venv (`setup_peers.sh`), not the project's: `.venv-peers/bin/python
ray_large.py --mb 0,1,16,128`. Prints one JSON object on stdout.

Ray runs a local cluster in this process (`ray.init(num_cpus=2)`, as `ray_fanout.py`). After one
small warm-up call (both functions' workers up), each size is timed once, smallest first:
`ray.get(measure.remote(make.remote(mb, seed)))`, where `make` returns `mb` MiB of zeros (as
`apps/large.py`'s: the same zeros, or with `--distinct` distinct bytes each time) and
`measure` its length; `--sequence N` then times N values of the largest size in a row. A
return value above Ray's inline limit (100 KiB) goes to the node's shared-memory object store
(plasma) and `measure`'s worker reads it from there: nothing is written to disk. With 0 among the sizes, `workload_s["0"]` is the fixed cost of the two tasks, and
mb / (t(mb) - t(0)) the transfer's throughput, as for the engine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time

import ray


@ray.remote
def make(mb: int, seed: int = 0) -> bytes:
    if not seed:  # as `apps/large.py`'s `make`
        return bytes(mb * 1024 * 1024)
    return seed.to_bytes(8, "little") + bytes(mb * 1024 * 1024 - 8)


@ray.remote
def measure(data: bytes) -> int:
    return len(data)


def pass_on(mb: int, seed: int = 0) -> float:
    start = time.perf_counter()
    result = ray.get(measure.remote(make.remote(mb, seed)))
    elapsed = time.perf_counter() - start
    if result != mb * 1024 * 1024:
        raise SystemExit(f"ray pass_on({mb}) returned {result}, expected {mb * 1024 * 1024}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", default="0,1,16,128", help="sizes in MiB, comma-separated")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--distinct", action="store_true",
                        help="a distinct value each time (seeds 1, 2, ...), not the same zeros")
    parser.add_argument("--sequence", type=int, default=0,
                        help="then this many values of the largest size in a row (`sequence_s`)")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.mb.split(",") if s.strip())

    # Keep Ray's dashboard and usage reporting out of the measurement.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    start = time.perf_counter()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    init_s = time.perf_counter() - start

    out: dict[str, object] = {"ray_version": ray.__version__, "num_cpus": args.num_cpus, "init_s": init_s}
    out["warmup_s"] = pass_on(0)
    seeds = itertools.count(1) if args.distinct else itertools.repeat(0)
    out["workload_s"] = {str(mb): pass_on(mb, next(seeds) if mb else 0) for mb in sizes}
    if args.sequence:
        out["sequence_s"] = [pass_on(sizes[-1], next(seeds)) for _ in range(args.sequence)]
    start = time.perf_counter()
    ray.shutdown()
    out["shutdown_s"] = time.perf_counter() - start
    print(json.dumps(out))


if __name__ == "__main__":
    main()
