"""Benchmark the engine beside Ray on this machine, in one run. Reports numbers; asserts nothing.

    python benchmarks/run.py [--sizes 100,1000,10000] [--repeats 3] [--backend process]
                             [--chain 200] [--no-ray] [--max-minutes 30]

For each fan-out size N, each repeat runs, one after the other:

- the engine, as a user would: `python -m engine.cli run benchmarks/apps/fanout.py:fanout
  --input N --json --backend B --state-dir <fresh tmp dir>`. Timed twice: the wall time of the
  CLI process (start to exit: interpreter and imports, store, executors, the run, shutdown) and
  the run's own duration as the engine records it (`engine show RUN_ID --json`: started_at to
  ended_at, executor start-up included);
- Ray, in the peers venv: `ray_fanout.py --n N` (see its docstring: `ray.init` timed apart from
  the workload, and the process's wall time).

The chain benchmark runs `apps/chain.py:hop` with K and with 1 and reports the warm per-hop
latency (duration(K) - duration(1)) / (K - 1), beside Ray's sequential round trips.

Medians over the repeats go in the Markdown table printed at the end; every raw number, the
machine's facts and the settings the engine ran with go in `benchmarks/results/latest.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
APPS = HERE / "apps"
PEERS_PYTHON = HERE / ".venv-peers" / "bin" / "python"
ENGINE_CLI = [sys.executable, "-m", "engine.cli"]


def log(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# --- the engine --------------------------------------------------------------------------


def engine_run(target: str, value: int, backend: str, config: Path | None, timeout: float) -> dict[str, Any]:
    """One `engine run` in a fresh state directory: its wall time, and its duration as stored."""
    state_dir = Path(tempfile.mkdtemp(prefix="engine-bench-"))
    cmd = [*ENGINE_CLI, "run", target, "--input", str(value), "--json", "--backend", backend,
           "--state-dir", str(state_dir)]
    if config is not None:
        cmd += ["--config", str(config)]
    try:
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"bench: `{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        outcome = json.loads(proc.stdout.strip().splitlines()[-1])
        show = subprocess.run([*ENGINE_CLI, "show", outcome["run_id"], "--json", "--state-dir", str(state_dir)],
                              cwd=REPO, capture_output=True, text=True, timeout=timeout, check=True)
        info = json.loads(show.stdout)
        first = first_dispatch(state_dir, outcome["run_id"])
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    return {"wall_s": wall, "duration_s": info["duration"], "status": info["status"],
            "result": outcome["result"], "calls": info["calls"]["total"],
            "executions": info["calls"]["executions"], "run_id": outcome["run_id"], **first}


def first_dispatch(state_dir: Path, run_id: str) -> dict[str, Any]:
    """Where the run's duration went, read from the store (`engine show` lists no call start
    times): the root call's dispatch splits it into the first executor's start-up (noisy: a fresh
    process importing grpc) and the calls themselves; per function, when its first call was
    created and started and its last one ended, in seconds from the run's start."""
    sys.path.insert(0, str(REPO))
    from engine.store import open_store, store_url

    store = open_store(store_url(state_dir))
    try:
        run = store.get_run(run_id)
        calls = store.load_calls(run_id)
    finally:
        store.close()
    root = next((c for c in calls if c.call_id == run.root_call_id), None)
    if run.started_at is None or run.ended_at is None or root is None or root.started_at is None:
        return {}
    t0 = run.started_at
    timeline: dict[str, dict[str, Any]] = {}
    for c in calls:
        if c.kind != "call":
            continue
        t = timeline.setdefault(c.function, {"calls": 0, "created": None, "first_start": None, "last_end": None})
        t["calls"] += 1
        for key, value, pick in (("created", c.created_at, min), ("first_start", c.started_at, min),
                                 ("last_end", c.ended_at, max)):
            if value is not None:
                rel = round(value - t0, 4)
                t[key] = rel if t[key] is None else pick(t[key], rel)
    return {"to_first_dispatch_s": root.started_at - t0,
            "after_first_dispatch_s": run.ended_at - root.started_at, "timeline": timeline}


def work_phase(row: dict[str, Any]) -> float | None:
    t = row.get("timeline", {}).get("work")
    if not t or t["first_start"] is None or t["last_end"] is None:
        return None
    return float(t["last_end"] - t["first_start"])


def engine_settings(config: Path | None) -> dict[str, Any]:
    """The settings the benchmark apps really run with: decorators merged with any engine.yaml."""
    sys.path.insert(0, str(REPO))
    from engine.app import load_app
    from engine.scheduler.scheduler import default_max_executors

    out: dict[str, Any] = {}
    for target in ("fanout.py:fanout", "chain.py:hop"):
        app = load_app(str(APPS / target), config)
        out[target] = {
            "max_executors": app.config.max_executors or default_max_executors(),
            "idle_timeout_s": app.config.idle_timeout if app.config.idle_timeout is not None else 10.0,
            "functions": {
                name: {"concurrency": s.config.concurrency, "max_containers": s.config.max_containers,
                       "min_containers": s.config.min_containers, "warm_containers": s.config.warm_containers}
                for name, s in sorted(app.functions.items())
            },
        }
    return out


def write_config(args: argparse.Namespace) -> Path | None:
    """An engine.yaml overriding `work`'s pool, when asked for on the command line."""
    override: dict[str, int] = {}
    if args.work_concurrency:
        override["concurrency"] = args.work_concurrency
    if args.work_max_containers:
        override["max_containers"] = args.work_max_containers
    if not override:
        return None
    path = Path(tempfile.mkdtemp(prefix="engine-bench-cfg-")) / "engine.yaml"
    fields = ", ".join(f"{k}: {v}" for k, v in override.items())
    path.write_text(f"functions:\n  work: {{{fields}}}\n")
    return path


# --- Ray ---------------------------------------------------------------------------------


def ensure_peers() -> bool:
    try:
        subprocess.run(["bash", str(HERE / "setup_peers.sh")], check=True, timeout=900)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log(f"could not set up the peers venv ({exc}); Ray is skipped")
        return False
    return PEERS_PYTHON.exists()


def ray_run(n: int, chain: int, timeout: float) -> dict[str, Any]:
    cmd = [str(PEERS_PYTHON), str(HERE / "ray_fanout.py"), "--n", str(n)]
    if chain > 1:
        cmd += ["--chain", str(chain)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"bench: `{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    return out


# --- facts -------------------------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                facts["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                facts["mem_total_gib"] = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    try:
        import grpc

        import engine

        facts["engine_version"] = engine.__version__
        facts["grpcio"] = grpc.__version__
    except ImportError:
        pass
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "engine"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
        facts["engine_commit"] = rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        pass
    return facts


# --- report ------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or not theirs:
        return None
    return ours / theirs


def markdown(results: dict[str, Any]) -> str:
    backend = results["settings"]["backend"]
    lines = [
        f"| workload | engine ({backend}) median s | calls/s | Ray median s | ratio (engine/Ray) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in results["fanout"]:
        e, r = row["engine"], row.get("ray") or {}
        lines.append(
            f"| fan-out {row['n']} ({row['n'] + 2} calls), in-run | {fmt(e['median_duration_s'])} | "
            f"{fmt(e['calls_per_s'], 0)} | {fmt(r.get('median_workload_s'))} | {fmt(row.get('ratio_duration'), 1)}× |"
        )
    for row in results["fanout"]:
        e, r = row["engine"], row.get("ray") or {}
        warm = e.get("median_work_phase_s")
        lines.append(
            f"| fan-out {row['n']}, warm: the {row['n']} work calls only | {fmt(warm)} | "
            f"{fmt(row['n'] / warm if warm else None, 0)} | {fmt(r.get('median_workload_warm_s'))} | "
            f"{fmt(ratio(warm, r.get('median_workload_warm_s')), 1)}× |"
        )
    for row in results["fanout"]:
        e, r = row["engine"], row.get("ray") or {}
        lines.append(
            f"| fan-out {row['n']}, end to end (process wall) | {fmt(e['median_wall_s'])} | "
            f"{fmt((row['n'] + 2) / e['median_wall_s'], 0)} | {fmt(r.get('median_wall_s'))} | "
            f"{fmt(row.get('ratio_wall'), 1)}× |"
        )
    c = results.get("chain")
    if c:
        e, r = c["engine"], c.get("ray") or {}
        per_s = 1000 / e["median_per_hop_ms"] if e["median_per_hop_ms"] else None
        lines.append(
            f"| chain, warm per hop (K={c['k']}), ms | {fmt(e['median_per_hop_ms'], 1)} ms | "
            f"{fmt(per_s, 0)} | {fmt(r.get('median_per_hop_ms'), 1)} ms | {fmt(c.get('ratio'), 1)}× |"
        )
        d = e.get("median_per_hop_from_dispatch_ms")
        lines.append(
            f"| chain, per hop from the first dispatch, ms | {fmt(d, 1)} ms | "
            f"{fmt(1000 / d if d else None, 0)} | {fmt(r.get('median_per_hop_ms'), 1)} ms | "
            f"{fmt(ratio(d, r.get('median_per_hop_ms')), 1)}× |"
        )
    return "\n".join(lines)


def notes(results: dict[str, Any]) -> str:
    m, s = results["machine"], results["settings"]
    fan = s["engine"]["fanout.py:fanout"]
    fns = ", ".join(
        f"{name} concurrency {f['concurrency']} max_containers {f['max_containers'] or '-'}"
        for name, f in fan["functions"].items()
    )
    ray_init = median([x for row in results["fanout"] for x in (row.get("ray") or {}).get("init_s", [])])
    return (
        f"{m['nproc']} cores ({m.get('cpu_model', '?')}), Python {m['python']}, "
        f"engine {m.get('engine_version', '?')} ({m.get('engine_commit', '?')}), "
        f"Ray {s.get('ray_version') or 'not run'} (num_cpus={s['ray_num_cpus']}); "
        f"median of {s['repeats']} repeats. Engine settings: {fns}; max_executors {fan['max_executors']}. "
        f"Engine in-run = the run's stored duration (executor start-up included); "
        f"Ray in-run = the workload after `ray.init` (median init {fmt(ray_init)} s, not included). "
        f"Warm = engine: first to last `work` call, executors up; Ray: the workload run again in "
        f"the same driver. End to end = the CLI / script process from start to exit, for both. "
        f"Chain: Ray's figure is a driver round trip `ray.get(hop.remote(i))` per hop. "
        f"1-minute load average {m['loadavg_at_start'][0]:.1f} at the start, "
        f"{m.get('loadavg_at_end', [0])[0]:.1f} at the end."
    )


# --- main --------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000", help="fan-out sizes, comma-separated (default 100,1000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", choices=["process", "docker"], default="process")
    parser.add_argument("--chain", type=int, default=200, help="hops of the chain benchmark (0: skip)")
    parser.add_argument("--no-ray", action="store_true", help="measure the engine only")
    parser.add_argument("--work-concurrency", type=int, help="override work's concurrency (via engine.yaml)")
    parser.add_argument("--work-max-containers", type=int, help="override work's max_containers")
    parser.add_argument("--max-minutes", type=float, default=30,
                        help="skip the remaining sizes once this much time has gone (default 30)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds allowed for one process")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.json")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    began = time.monotonic()

    with_ray = not args.no_ray and ensure_peers()
    config = write_config(args)
    results: dict[str, Any] = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": machine_facts(),
        "settings": {"backend": args.backend, "repeats": args.repeats, "ray_num_cpus": 2,
                     "engine": engine_settings(config), "ray_version": None},
        "fanout": [], "chain": None, "skipped_sizes": [],
    }

    for n in sizes:
        spent = (time.monotonic() - began) / 60
        if spent > args.max_minutes:
            log(f"{spent:.1f} min spent: skipping fan-out {n} (--max-minutes {args.max_minutes:g})")
            results["skipped_sizes"].append(n)
            continue
        engine_rows: list[dict[str, Any]] = []
        ray_rows: list[dict[str, Any]] = []
        for i in range(args.repeats):
            row = engine_run(f"{APPS / 'fanout.py'}:fanout", n, args.backend, config, args.timeout)
            if row["status"] != "succeeded" or row["result"] != n * (n - 1):
                raise SystemExit(f"bench: engine fanout({n}) gave {row['status']} {row['result']!r}")
            row["loadavg_1m"] = os.getloadavg()[0]  # other work on the machine skews a repeat
            engine_rows.append(row)
            log(f"fan-out {n} #{i + 1}: engine {row['duration_s']:.2f} s in-run, {row['wall_s']:.2f} s wall")
            if with_ray:
                r = ray_run(n, 0, args.timeout)
                ray_rows.append(r)
                results["settings"]["ray_version"] = r["ray_version"]
                log(f"fan-out {n} #{i + 1}: ray {r['workload_s']:.2f} s workload, "
                    f"{r['init_s']:.2f} s init, {r['wall_s']:.2f} s wall")
        e_dur = median([r["duration_s"] for r in engine_rows])
        e_wall = median([r["wall_s"] for r in engine_rows])
        entry: dict[str, Any] = {
            "n": n,
            "engine": {
                "calls": engine_rows[0]["calls"],
                "duration_s": [r["duration_s"] for r in engine_rows],
                "wall_s": [r["wall_s"] for r in engine_rows],
                "median_duration_s": e_dur, "median_wall_s": e_wall,
                "calls_per_s": (n + 2) / e_dur if e_dur else None,
                # The n work calls alone, first dispatch to last end: executors already up.
                "work_phase_s": [work_phase(r) for r in engine_rows],
                "median_work_phase_s": median([w for r in engine_rows if (w := work_phase(r)) is not None]),
                "runs": engine_rows,
            },
        }
        if ray_rows:
            r_work = median([r["workload_s"] for r in ray_rows])
            r_wall = median([r["wall_s"] for r in ray_rows])
            entry["ray"] = {
                key: [r[key] for r in ray_rows]
                for key in ("init_s", "workload_s", "workload_warm_s", "shutdown_s", "wall_s")
            }
            entry["ray"].update(
                median_workload_s=r_work, median_workload_warm_s=median([r["workload_warm_s"] for r in ray_rows]),
                median_init_s=median([r["init_s"] for r in ray_rows]), median_wall_s=r_wall,
                calls_per_s=(n + 1) / r_work if r_work else None,
            )
            entry["ratio_duration"] = ratio(e_dur, r_work)
            entry["ratio_wall"] = ratio(e_wall, r_wall)
        results["fanout"].append(entry)
        _write(args.out, results)

    if args.chain > 1:
        k = args.chain
        rows = []
        ray_hops: list[float] = []
        for i in range(args.repeats):
            one = engine_run(f"{APPS / 'chain.py'}:hop", 1, args.backend, config, args.timeout)
            long = engine_run(f"{APPS / 'chain.py'}:hop", k, args.backend, config, args.timeout)
            per_hop = (long["duration_s"] - one["duration_s"]) / (k - 1) * 1000
            # The same difference taken from the root call's dispatch on: free of the noise of
            # the executor's start-up, which the duration difference only cancels on average.
            per_hop_dispatch = (long["after_first_dispatch_s"] - one["after_first_dispatch_s"]) / (k - 1) * 1000
            rows.append({"duration_1_s": one["duration_s"], "duration_k_s": long["duration_s"],
                         "after_first_dispatch_1_s": one["after_first_dispatch_s"],
                         "after_first_dispatch_k_s": long["after_first_dispatch_s"],
                         "per_hop_ms": per_hop, "per_hop_from_dispatch_ms": per_hop_dispatch})
            log(f"chain {k} #{i + 1}: engine {per_hop:.2f} ms per hop "
                f"({per_hop_dispatch:.2f} ms from the first dispatch)")
            if with_ray:
                r = ray_run(1, k, args.timeout)
                ray_hops.append(r["chain_per_hop_ms"])
                log(f"chain {k} #{i + 1}: ray {r['chain_per_hop_ms']:.2f} ms per hop")
        e_hop = median([r["per_hop_ms"] for r in rows])
        results["chain"] = {
            "k": k,
            "engine": {"runs": rows, "median_per_hop_ms": e_hop,
                       "median_per_hop_from_dispatch_ms": median([r["per_hop_from_dispatch_ms"] for r in rows])},
            "ray": {"per_hop_ms": ray_hops, "median_per_hop_ms": median(ray_hops)} if ray_hops else None,
            "ratio": ratio(e_hop, median(ray_hops)),
        }

    results["machine"]["loadavg_at_end"] = os.getloadavg()
    results["elapsed_s"] = time.monotonic() - began
    results["markdown"] = markdown(results)
    results["notes"] = notes(results)
    _write(args.out, results)
    print(results["markdown"])
    print()
    print(results["notes"])
    log(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")
    return 0


def _write(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
