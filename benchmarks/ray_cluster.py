"""The swarm benchmark's workloads on a multi-node Ray cluster: the peer of `swarm.py`.

Runs in the peers venv (`setup_peers.sh`) as the driver of a Ray cluster that `swarm.py`
started on the test Swarm's hosts (one Ray node in each host's network namespace), and prints
one JSON object on stdout:

    .venv-peers/bin/python ray_cluster.py --address 10.79.0.11:6379 --n 1000 --chain 200
    .venv-peers/bin/python ray_cluster.py --address ... --death 12 --seconds 6 --attempts FILE

- `--n`: `ray.get(total.remote(*[work.remote(i) for i in range(n)]))` with `work` scheduled
  `SPREAD` over the nodes (the engine's fan-out on a Swarm spreads its executors too);
  `workload_s` right after `ray.init`, `workload_warm_s` the same again, and how many `work`
  tasks each node ran.
- `--chain`: k sequential `ray.get(hop.remote(i))` from the driver; per hop = (t(k) - t(1)) /
  (k - 1), as in `ray_fanout.py`.
- `--death`: `death` tasks of `seconds` each, `SPREAD`, Ray's default retries (3 for a task
  whose worker or node dies). Each attempt appends `i node_ip start_time` to `--attempts` (the
  hosts share this machine's filesystem), so `swarm.py`, which kills a node mid-run, can tell
  when the lost tasks started again elsewhere.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import time

import ray


@ray.remote(scheduling_strategy="SPREAD")
def work(i: int) -> tuple[int, str]:
    return i * 2, ray.util.get_node_ip_address()


@ray.remote
def total(*xs: tuple[int, str]) -> tuple[int, dict[str, int]]:
    return sum(x for x, _ in xs), dict(collections.Counter(node for _, node in xs))


@ray.remote
def hop(k: int) -> int:
    return k


@ray.remote(scheduling_strategy="SPREAD")
def slow(i: int, seconds: float, attempts: str) -> tuple[int, str]:
    node = ray.util.get_node_ip_address()
    with open(attempts, "a") as f:
        f.write(f"{i} {node} {time.time()}\n")
    time.sleep(seconds)
    return i, node


def fanout(n: int) -> tuple[float, dict[str, int]]:
    start = time.perf_counter()
    result, per_node = ray.get(total.remote(*[work.remote(i) for i in range(n)]))
    elapsed = time.perf_counter() - start
    if result != n * (n - 1):
        raise SystemExit(f"ray fanout({n}) returned {result}, expected {n * (n - 1)}")
    return elapsed, per_node


def chain(k: int) -> float:
    start = time.perf_counter()
    for i in range(k, -1, -1):
        ray.get(hop.remote(i))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--chain", type=int, default=0)
    parser.add_argument("--death", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--attempts", default="")
    args = parser.parse_args()

    out: dict[str, object] = {"ray_version": ray.__version__}
    started = time.perf_counter()
    ray.init(address=args.address, _node_ip_address=args.address.rsplit(":", 1)[0],
             logging_level="ERROR", log_to_driver=False)
    out["init_s"] = time.perf_counter() - started
    out["nodes"] = sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"])
    if args.n:
        out["workload_s"], out["per_node"] = fanout(args.n)
        out["workload_warm_s"], out["per_node_warm"] = fanout(args.n)
    if args.chain:
        ray.get(hop.remote(0))  # a worker up, as the engine's figure leaves out its executor's start
        one = min(chain(1) for _ in range(3))
        long = chain(args.chain)
        out["chain_per_hop_ms"] = 1000 * (long - one) / (args.chain - 1)
    if args.death:
        refs = [slow.remote(i, args.seconds, args.attempts) for i in range(args.death)]
        results = ray.get(refs)
        out["death"] = {"calls": len(results), "nodes": sorted({node for _, node in results})}
    ray.shutdown()
    out["pid"] = os.getpid()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
