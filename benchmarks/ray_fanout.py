"""The fan-out and chain workloads in Ray, for comparison with `apps/fanout.py` and `apps/chain.py`.

Runs in the peers venv (`setup_peers.sh`), not the project's: `.venv-peers/bin/python
ray_fanout.py --n 1000 [--chain 200]`. Prints one JSON object on stdout.

Ray runs a local cluster in this process (`ray.init(num_cpus=2)`: two worker processes). Its
start-up is timed apart from the workload, because Ray amortises it over a long-lived driver:

- `init_s`: `ray.init()`.
- `workload_s`: `ray.get(total.remote(*[work.remote(i) for i in range(n)]))` right after init —
  the steady-state number compared with the engine's in-run duration. Workers that are still
  starting are waited for inside it, as the engine's run waits for its executors.
- `workload_warm_s`: the same workload again in the same driver, everything warm.
- `chain_*`: k sequential round trips `ray.get(hop.remote(i))` (each task known only once the
  previous one returned, like a tail call), per hop = (t(k) - t(1)) / (k - 1), as for the engine.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import ray


@ray.remote
def work(i: int) -> int:
    return i * 2


@ray.remote
def total(*xs: int) -> int:
    return sum(xs)


@ray.remote
def hop(k: int) -> int:
    return k


def fanout(n: int) -> float:
    start = time.perf_counter()
    result = ray.get(total.remote(*[work.remote(i) for i in range(n)]))
    elapsed = time.perf_counter() - start
    if result != n * (n - 1):
        raise SystemExit(f"ray fanout({n}) returned {result}, expected {n * (n - 1)}")
    return elapsed


def chain(k: int) -> float:
    start = time.perf_counter()
    for i in range(k, -1, -1):  # k + 1 calls, as `hop(k)` in apps/chain.py
        ray.get(hop.remote(i))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, required=True, help="work calls in the fan-out")
    parser.add_argument("--chain", type=int, default=0, help="also time a chain of K hops (0: skip)")
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()

    # Keep Ray's dashboard and usage reporting out of the measurement.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    start = time.perf_counter()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    init_s = time.perf_counter() - start

    out: dict[str, object] = {
        "ray_version": ray.__version__, "num_cpus": args.num_cpus, "n": args.n, "init_s": init_s,
    }
    out["workload_s"] = fanout(args.n)
    out["workload_warm_s"] = fanout(args.n)
    if args.chain > 1:
        one = min(chain(1) for _ in range(3))
        long = chain(args.chain)
        out.update(chain_k=args.chain, chain_1_s=one, chain_k_s=long,
                   chain_per_hop_ms=(long - one) / (args.chain - 1) * 1000)
    start = time.perf_counter()
    ray.shutdown()
    out["shutdown_s"] = time.perf_counter() - start
    print(json.dumps(out))


if __name__ == "__main__":
    main()
