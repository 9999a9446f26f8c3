"""One large value from `make` to `measure`, the engine and Ray taking turns. Reports numbers; asserts nothing.

    python benchmarks/large_paired.py [--backends process,docker] [--pairs 3] [--mb 128]
                                      [--values distinct|same] [--sequence N]
                                      [--out results/large_paired.json]

`run.py --parts large` starts a fresh engine per run and Ray once per repeat, so on a shared
machine whose load moves by the second the two sides are measured at different moments, and the
engine's executor start-ups (seconds) swamp the transfer. Here one scheduler is started per
backend, in this process, with warm executors (`idle_timeout` 600 s), and each pair runs the
engine's `apps/large.py:pass_on` for 0 and MB MiB, then `ray_large.py --mb 0,MB` (peers venv),
back to back. The engine's time is from `make`'s dispatch to `measure`'s end (store timestamps);
Ray's the workload after its warm-up; each side's MiB/s is MB / (t(MB) - t(0)). Every value is
checkpointed as in any run: adopted into the store, hashed and fsynced.

`--values distinct` (the default) makes every value a different one, as a real workload's are:
each is then a new blob, as a new object is in Ray's store. `--values same` hands on the same
zeros every time (before round ten, the only kind): the engine stores that blob once and drops
each later copy, so its page cache never grows. `--sequence N` then runs N hand-offs in a row on
each side — one scheduler, one Ray session, distinct values — and reports each one's time: what
a pipeline of large values gets once the first few are behind it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from statistics import median
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "apps"))

import large  # noqa: E402

from engine import wire  # noqa: E402
from engine.app import app_spec_from_function  # noqa: E402
from engine.runner import make_backend  # noqa: E402
from engine.scheduler import Scheduler  # noqa: E402
from engine.store import open_store, store_url  # noqa: E402
from engine.wire.v1 import engine_pb2 as pb  # noqa: E402

PEERS_PYTHON = HERE / ".venv-peers" / "bin" / "python"


async def run_pass_on(scheduler: Scheduler, app: Any, mb: int, seed: int = 0) -> tuple[Any, Any]:
    """Run `large.pass_on` for `mb` MiB (`seed`: see `apps/large.py`) to its end: its `make`
    and `measure` calls."""
    args = pb.Arguments()
    args.args.add().value.data = wire.dumps(mb)
    args.args.add().value.data = wire.dumps(seed)
    run = scheduler.submit_run(app, wire.dumps([mb, seed]), args)
    await run.done.wait()
    calls = {c.function: c for c in run.calls.values()}
    make, measure = calls["make"], calls["measure"]
    assert make.ended_at and make.started_at and measure.ended_at and measure.started_at
    return make, measure


@contextlib.asynccontextmanager
async def warm_scheduler(backend: str) -> AsyncIterator[tuple[Scheduler, Any]]:
    """A scheduler of `large.pass_on` on `backend` in a fresh state directory (removed after),
    with both functions' executors up and kept."""
    state_dir = Path(tempfile.mkdtemp(prefix="engine-large-"))
    store = open_store(store_url(state_dir))
    app = app_spec_from_function(large.pass_on)
    scheduler = Scheduler(store, make_backend(backend, state_dir, app), idle_timeout=600)
    await scheduler.start()
    try:
        await run_pass_on(scheduler, app, 0)  # both executors up
        yield scheduler, app
    finally:
        await scheduler.close()
        store.close()
        subprocess.run(["rm", "-rf", str(state_dir)], check=False)


async def _pass_on(scheduler: Scheduler, app: Any, mb: int, seed: int = 0) -> dict[str, float]:
    make, measure = await run_pass_on(scheduler, app, mb, seed)
    return {"from_dispatch_s": measure.ended_at - make.started_at, "make_s": make.ended_at - make.started_at,
            "measure_s": measure.ended_at - measure.started_at}


def _ray(mb: int, distinct: bool, sequence: int = 0) -> dict[str, Any]:
    """Ray's output (a second try when its local cluster fails to come up, as it may under load)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cmd = [str(PEERS_PYTHON), str(HERE / "ray_large.py"), "--mb", f"0,{mb}", "--sequence", str(sequence),
           *(["--distinct"] if distinct else [])]
    for attempt in (1, 2):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        if proc.returncode == 0 or attempt == 2:
            break
    if proc.returncode != 0:
        raise SystemExit(f"ray_large.py failed:\n{proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout))


async def _backend(backend: str, pairs: int, mb: int, distinct: bool) -> list[dict[str, Any]]:
    rows = []
    seeds = itertools.count(1) if distinct else itertools.repeat(0)
    async with warm_scheduler(backend) as (scheduler, app):
        for i in range(pairs):
            zero, big = await _pass_on(scheduler, app, 0), await _pass_on(scheduler, app, mb, next(seeds))
            ray = {k: float(v) for k, v in (await asyncio.to_thread(_ray, mb, distinct))["workload_s"].items()}
            row = {"engine_mib_per_s": mb / (big["from_dispatch_s"] - zero["from_dispatch_s"]),
                   "ray_mib_per_s": mb / (ray[str(mb)] - ray["0"]), "engine": big, "engine_0": zero,
                   "ray_s": ray, "loadavg_1m": os.getloadavg()[0]}
            rows.append(row)
            print(f"{backend} pair {i + 1}: engine {row['engine_mib_per_s']:.0f} MiB/s (make {big['make_s']:.2f} s, "
                  f"measure {big['measure_s']:.2f} s), Ray {row['ray_mib_per_s']:.0f} MiB/s, "
                  f"load {row['loadavg_1m']:.1f}", flush=True)
    return rows


async def _sequence(backend: str, n: int, mb: int) -> dict[str, Any]:
    """`n` distinct values of `mb` MiB handed on in a row by one warm scheduler, then by one
    Ray session: each hand-off's seconds (the engine's from `make`'s dispatch to `measure`'s end)."""
    async with warm_scheduler(backend) as (scheduler, app):
        engine = [(await _pass_on(scheduler, app, mb, seed))["from_dispatch_s"] for seed in range(1, n + 1)]
    ray = await asyncio.to_thread(_ray, mb, True, n)
    fixed = ray["workload_s"]["0"]  # as in a pair, Ray's fixed cost of the two tasks is its own
    out = {"engine_s": engine, "ray_s": ray["sequence_s"], "ray_fixed_s": fixed,
           "engine_median_s": median(engine), "ray_median_s": median(ray["sequence_s"]),
           "engine_median_second_half_s": median(engine[n // 2:]),
           "ray_median_second_half_s": median(ray["sequence_s"][n // 2:]),
           "loadavg_1m": os.getloadavg()[0]}
    print(f"{backend}, {n} distinct {mb} MiB values in a row: engine {' '.join(f'{t:.2f}' for t in engine)}; "
          f"Ray {' '.join(f'{t:.2f}' for t in ray['sequence_s'])}; medians engine {out['engine_median_s']:.3f} s, "
          f"Ray {out['ray_median_s']:.3f} s (second half {out['engine_median_second_half_s']:.3f} · "
          f"{out['ray_median_second_half_s']:.3f} s)", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="process,docker")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--mb", type=int, default=128)
    parser.add_argument("--values", choices=("distinct", "same"), default="distinct")
    parser.add_argument("--sequence", type=int, default=0, help="then N hand-offs in a row per side")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "large_paired.json")
    args = parser.parse_args()
    results: dict[str, Any] = {"mb": args.mb, "values": args.values, "backends": {}}
    for backend in args.backends.split(","):
        rows = asyncio.run(_backend(backend, args.pairs, args.mb, args.values == "distinct")) if args.pairs else []
        if args.sequence:
            results.setdefault("sequences", {})[backend] = asyncio.run(_sequence(backend, args.sequence, args.mb))
        if not rows:
            continue
        ratios = [r["engine_mib_per_s"] / r["ray_mib_per_s"] for r in rows]
        results["backends"][backend] = {
            "pairs": rows, "median_engine_mib_per_s": median(r["engine_mib_per_s"] for r in rows),
            "median_ray_mib_per_s": median(r["ray_mib_per_s"] for r in rows),
            "median_engine_over_ray": median(ratios)}
        b = results["backends"][backend]
        print(f"{backend}: engine {b['median_engine_mib_per_s']:.0f} MiB/s, Ray {b['median_ray_mib_per_s']:.0f} MiB/s, "
              f"engine ÷ Ray {b['median_engine_over_ray']:.2f} (medians of {len(rows)} pairs)", flush=True)
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
