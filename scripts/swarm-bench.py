"""Measure the swarm backend on the three-host test Swarm beside the docker backend. Reports
numbers; asserts nothing. Needs root (it builds the cluster of tests/integration/swarmlib.py and
removes it afterwards).

    python scripts/swarm-bench.py [--sizes 1000] [--repeats 3] [--chain 200] [--large-mb 64] [--kills 3]

- Fan-out: `benchmarks/apps/fanout.py:fanout N` (N + 2 calls; `work` runs in at most 2
  executors of concurrency 16) on `docker` (this machine's engine), `swarm` with the engine
  *published* (it dials node:port) and *attached* (it runs in a container's network namespace
  on the overlay network). Wall time of the `engine run` process, and the run's own duration.
- Per hop: `benchmarks/apps/chain.py:hop` with K, timed from the store: (last hop's dispatch -
  second hop's dispatch) / (K - 1), the warm latency of one hop (a result back, checkpointed, the
  next call dispatched) without the first executor's start-up. (benchmarks/run.py subtracts a
  1-hop run instead; a Swarm executor's start-up varies by more than the 200 hops take.)
- Large value: `benchmarks/apps/large.py:pass_on MB` (one MB-MiB value from `make` to `measure`,
  on swarm placed on two different workers, esw2 and esw3) and `pass_on 0` for the fixed cost;
  throughput = MB / (duration(MB) - duration(0)). The value crosses the scheduler's Blobs service
  both ways and is fsynced there once.
- Node death: `tests/integration/swarm_apps/cluster.py:fanout` with twelve 6-second calls on six
  executors; during the second wave a worker host is killed (link down, every process SIGKILLed).
  *Noticed*: from the kill to the first call failed as lost; *elsewhere*: to the last of its
  calls running again on another host. The host is revived between repeats.

The methodology follows benchmarks/run.py (which takes only process and docker backends).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO))

import swarmlib  # noqa: E402

FANOUT = REPO / "benchmarks" / "apps" / "fanout.py"
CHAIN = REPO / "benchmarks" / "apps" / "chain.py"
LARGE = REPO / "benchmarks" / "apps" / "large.py"
SWARM_APPS = REPO / "tests" / "integration" / "swarm_apps"


def log(text: str) -> None:
    print(f"swarm-bench: {text}", file=sys.stderr, flush=True)


def engine(args: list[str], *, mode: str, gateway: str, env: dict[str, str], cwd: Path,
           timeout: float = 900) -> subprocess.CompletedProcess[str]:
    prefix = ["nsenter", f"--net={gateway}"] if mode == "attached" else []
    return subprocess.run([*prefix, sys.executable, "-m", "engine.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def one_run(target: str, value: Any, backend: str, mode: str, gateway: str, env: dict[str, str],
            cwd: Path = REPO, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="swarm-bench-"))
    try:
        started = time.perf_counter()
        proc = engine(["run", target, "--input", json.dumps(value), "--json", "--backend", backend,
                       "--state-dir", str(state), *extra], mode=mode, gateway=gateway, env=env, cwd=cwd)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"engine run {target} ({backend}/{mode}) exited {proc.returncode}:\n"
                             f"{proc.stderr[-3000:]}")
        run_id = json.loads(proc.stdout.strip().splitlines()[-1])["run_id"]
        show = engine(["show", run_id, "--json", "--state-dir", str(state)], mode="published",
                      gateway=gateway, env=env, cwd=cwd)
        info = json.loads(show.stdout)
        starts = sorted(c.started_at for c in calls_of(state) if c.kind == "call" and c.started_at)
        return {"wall_s": wall, "duration_s": info["duration"], "calls": info["calls"]["total"],
                "starts": starts}
    finally:
        shutil.rmtree(state, ignore_errors=True)


def calls_of(state: Path) -> list[Any]:
    from engine.store import open_store, store_url

    if not (state / "engine.db").exists():
        return []
    store = open_store(store_url(state))
    try:
        runs = store.list_runs()
        return store.load_calls(runs[0].run_id) if runs else []
    finally:
        store.close()


def node_death(cluster: swarmlib.Cluster, gateway: str, env: dict[str, str]) -> dict[str, float]:
    """One kill of esw3 during a run (see the module docstring); revives it afterwards."""
    manager = cluster.manager.client()
    names = cluster.node_names()
    state = Path(tempfile.mkdtemp(prefix="swarm-bench-"))
    config = state / "engine.yaml"
    config.write_text((SWARM_APPS / "engine.yaml").read_text() + (
        "functions:\n"
        "  fanout: {constraints: ['node.role==manager']}\n"
        "  collect: {constraints: ['node.role==manager']}\n"
        "  where: {concurrency: 1, max_containers: 6}\n"))
    prefix = ["nsenter", f"--net={gateway}"]
    proc = subprocess.Popen([*prefix, sys.executable, "-m", "engine.cli", "run", "cluster.py:fanout",
                             "--input", '{"n": 12, "seconds": 6.0}', "--json", "--config", str(config),
                             "--state-dir", str(state)], cwd=SWARM_APPS, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def on_esw3() -> bool:
        for service in manager.api.services(filters={"label": ["engine.managed=1", "engine.function=where"]}):
            for task in manager.api.tasks(filters={"service": service["ID"], "desired-state": "running"}):
                if task["Status"]["State"] == "running" and names.get(task["NodeID"]) == "esw3":
                    return True
        return False

    try:
        deadline = time.monotonic() + 120
        while not (on_esw3() and sum(1 for c in calls_of(state) if c.function == "where"
                                     and c.status == "succeeded") >= 6):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("node death: the run never reached its second wave on esw3")
            time.sleep(0.1)
        killed = cluster.kill_host("esw3")
        noticed = None
        while proc.poll() is None:
            if noticed is None and any(c.error_kind for c in calls_of(state) if c.function == "where"):
                noticed = time.time() - killed
            time.sleep(0.05)
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"node death: the run failed:\n{err[-3000:]}")
        retried = [c for c in calls_of(state) if c.function == "where" and c.executions > 1]
        elsewhere = max(c.started_at for c in retried) - killed if retried else float("nan")
        return {"noticed_s": noticed if noticed is not None else float("nan"), "elsewhere_s": elsewhere,
                "retried": len(retried)}
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(state, ignore_errors=True)
        cluster.revive_host("esw3")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chain", type=int, default=200)
    parser.add_argument("--large-mb", type=int, default=64, help="large-value size in MiB (0: skip)")
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--no-docker", action="store_true", help="skip the docker backend")
    parser.add_argument("--out", help="write the raw numbers here (JSON)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]

    results: dict[str, Any] = {"fanout": {}, "per_hop_ms": {}, "large": {}, "node_death": [], "setup": {}}
    placement = Path(tempfile.mkdtemp(prefix="swarm-bench-")) / "engine.yaml"
    placement.write_text("functions:\n  make: {constraints: ['node.hostname==esw2']}\n"
                         "  measure: {constraints: ['node.hostname==esw3']}\n")
    cluster = swarmlib.Cluster()
    with swarmlib.exclusive():
        try:
            cluster.up()
            image = cluster.push_runtime()
            gateway = cluster.gateway(image)
            results["setup"] = dict(cluster.timings)
            base = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "ENGINE_BACKEND")}
            swarm_env = {**base, "DOCKER_HOST": cluster.manager.docker_host,
                         "ENGINE_SWARM_REGISTRY": swarmlib.REGISTRY}
            setups = [("docker", "local", base)] * (not args.no_docker) + [
                ("swarm", "published", swarm_env), ("swarm", "attached", swarm_env)]
            for backend, mode, env in setups:
                key = f"{backend}/{mode}"
                for n in sizes:
                    rows = [one_run(f"{FANOUT}:fanout", n, backend, mode, gateway, env)
                            for _ in range(args.repeats)]
                    results["fanout"].setdefault(key, {})[n] = rows
                    log(f"{key} fan-out {n}: median {statistics.median(r['duration_s'] for r in rows):.2f} s "
                        f"(wall {statistics.median(r['wall_s'] for r in rows):.2f} s)")
                hops = []
                for _ in range(args.repeats):
                    # From the store: dispatch to dispatch along the chain, the first hop (which
                    # waits for the executor to start) left out.
                    starts = one_run(f"{CHAIN}:hop", args.chain, backend, mode, gateway, env)["starts"]
                    hops.append(1000 * (starts[-1] - starts[1]) / (len(starts) - 2))
                results["per_hop_ms"][key] = hops
                log(f"{key} per hop: median {statistics.median(hops):.1f} ms")
                if args.large_mb:
                    rows = []
                    for _ in range(args.repeats):
                        runs = [one_run(f"{LARGE}:pass_on", mb, backend, mode, gateway, env,
                                        extra=("--config", str(placement)))["duration_s"]
                                for mb in (0, args.large_mb)]
                        rows.append({"fixed_s": runs[0], "duration_s": runs[1],
                                     "mb_per_s": args.large_mb / max(runs[1] - runs[0], 1e-9)})
                    results["large"][key] = {"mb": args.large_mb, "runs": rows}
                    log(f"{key} {args.large_mb} MiB value: median "
                        f"{statistics.median(r['duration_s'] for r in rows):.2f} s, "
                        f"{statistics.median(r['mb_per_s'] for r in rows):.0f} MiB/s")
            for _ in range(args.kills):
                row = node_death(cluster, gateway, swarm_env)
                results["node_death"].append(row)
                log(f"node death: noticed {row['noticed_s']:.1f} s, elsewhere {row['elsewhere_s']:.1f} s")
        finally:
            cluster.down(quiet=True)
    left = cluster.leftovers()
    if left:
        log(f"left behind: {left}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
