"""How long the scheduler's event loop is held at once during a large fan-out. Reports numbers;
asserts nothing.

    python benchmarks/loop_stall.py [--sizes 100000] [--repeats 1] [--backend process]
                                    [--store URL] [--out results/loop_stall.json]

Each run is `engine run benchmarks/apps/fanout.py:fanout --input N --json` in a fresh state
directory, exactly as `run.py` runs it, with one thing added inside that process: a probe task on
the scheduler's event loop (this file's `--child` mode wraps the coroutine the CLI hands to
`asyncio.run`). The probe sleeps 10 ms at a time and records how late each wake-up is: a late
wake-up is a stretch in which nothing else on the loop ran — no gRPC message from an executor, no
lease renewal, no HTTP request of `engine server`. An executor drops its stream when the loop is
held for about 10 s.

Reported per run: the longest stall (max lateness), the number of stalls over 100 ms and over 1 s,
when the longest began (seconds after the run's start) and how much of it the loop's thread was on a CPU, the end-to-end wall time and the run's
stored duration (`engine show`); and the garbage collector's full collections in that process
(how many, the longest, their sum), which hold the loop too.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FANOUT = f"{HERE / 'apps' / 'fanout.py'}:fanout"
TICK = 0.01


async def _probe(stalls: list[tuple[float, float, float]], t0: float, last: list[float]) -> None:
    """Each stall: when it began (s after start), how late the wake-up was, and how much of it
    the loop's thread spent on a CPU (the rest it waited: for the disk, or for a core)."""
    while True:
        before, cpu = time.perf_counter(), time.thread_time()
        last[0] = before
        await asyncio.sleep(TICK)
        late = time.perf_counter() - before - TICK
        if late > 0.02:
            stalls.append((round(before - t0, 3), round(late, 4), round(time.thread_time() - cpu, 4)))


def child(out: str, cli_args: list[str]) -> int:
    """Run the engine CLI in this process, with the probe on the loop it runs, and note how
    long each of the garbage collector's full (generation 2) collections took: a stall may be
    one of those rather than the engine's own code."""
    stalls: list[tuple[float, float, float]] = []
    full_gcs: list[tuple[float, float]] = []
    t0 = time.perf_counter()
    began = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            full_gcs.append((round(began[0] - t0, 3), round(time.perf_counter() - began[0], 4)))

    gc.callbacks.append(on_gc)
    # A watchdog thread: while the loop has not woken the probe for 50 ms, where the loop's
    # thread is, every 20 ms (its innermost frames of the engine or of grpc/sqlite/psycopg).
    last = [float("inf")]  # until the loop runs
    held: collections.Counter[str] = collections.Counter()
    main_id = threading.get_ident()

    def watch() -> None:
        while True:
            time.sleep(0.02)
            if time.perf_counter() - last[0] > TICK + 0.05:
                frame = sys._current_frames().get(main_id)
                where = []
                while frame is not None and len(where) < 3:
                    name = frame.f_code.co_filename
                    if "/engine/" in name or "grpc" in name or "sqlite" in name or "psycopg" in name:
                        where.append(f"{Path(name).name}:{frame.f_code.co_name}")
                    frame = frame.f_back
                held[" < ".join(where) or "(elsewhere)"] += 1

    threading.Thread(target=watch, daemon=True).start()
    real_run = asyncio.run

    async def probed(coro: Any) -> Any:
        probe = asyncio.ensure_future(_probe(stalls, t0, last))
        try:
            return await coro
        finally:
            probe.cancel()

    asyncio.run = lambda coro, **kw: real_run(probed(coro), **kw)  # type: ignore[assignment]
    from engine.cli import main

    try:
        code = main(cli_args)
    finally:
        Path(out).write_text(json.dumps({"stalls": stalls, "gc": full_gcs, "held": held.most_common(12)}))
    return code or 0


def one_run(n: int, backend: str, store: str | None) -> dict[str, Any]:
    state_dir = Path(tempfile.mkdtemp(prefix="engine-stall-"))
    stalls_file = state_dir / "stalls.json"
    cmd = ["run", FANOUT, "--input", str(n), "--json", "--backend", backend, "--state-dir", str(state_dir)]
    if store:
        cmd += ["--store", store]
    try:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--child", str(stalls_file), "--", *cmd],
                              cwd=REPO, capture_output=True, text=True, timeout=1800)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"loop_stall: engine run exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        outcome = json.loads(proc.stdout.strip().splitlines()[-1])
        show = ["show", outcome["run_id"], "--json", "--state-dir", str(state_dir)]
        if store:
            show += ["--store", store]
        info = json.loads(subprocess.run([sys.executable, "-m", "engine.cli", *show], cwd=REPO,
                                         capture_output=True, text=True, check=True).stdout)
        probed = json.loads(stalls_file.read_text())
        stalls = [tuple(s) for s in probed["stalls"]]
        full_gcs = [tuple(c) for c in probed["gc"]]
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    worst = max(stalls, key=lambda s: s[1], default=(None, 0.0))
    return {"n": n, "result_ok": outcome["result"] == n * (n - 1), "wall_s": round(wall, 2),
            "duration_s": round(info["duration"], 2), "max_stall_s": worst[1], "max_stall_at_s": worst[0],
            "stalls_over_100ms": sum(1 for s in stalls if s[1] > 0.1),
            "stalls_over_1s": sum(1 for s in stalls if s[1] > 1.0),
            "top5": sorted((s for s in stalls), key=lambda s: -s[1])[:5],
            "gc_full": len(full_gcs), "gc_full_max_s": max((c[1] for c in full_gcs), default=0.0),
            "gc_full_total_s": round(sum(c[1] for c in full_gcs), 3),
            "gc_top5": sorted(full_gcs, key=lambda c: -c[1])[:5],
            "held_at": probed["held"],
            "loadavg_1m": os.getloadavg()[0]}


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        return child(sys.argv[2], sys.argv[4:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--backend", default="process")
    parser.add_argument("--store", default=None, help="a postgresql:// URL (default: SQLite in the state dir)")
    parser.add_argument("--out", default=str(HERE / "results" / "loop_stall.json"))
    args = parser.parse_args()
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        for _ in range(args.repeats):
            row = one_run(n, args.backend, args.store)
            print(json.dumps(row), flush=True)
            rows.append(row)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"backend": args.backend, "store": bool(args.store), "runs": rows},
                                         indent=1))
    print("| N | max stall s | stalls > 100 ms | stalls > 1 s | end to end s | in-run s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in sorted({r["n"] for r in rows}):
        mine = [r for r in rows if r["n"] == n]
        med = {k: statistics.median(r[k] for r in mine) for k in
               ("max_stall_s", "stalls_over_100ms", "stalls_over_1s", "wall_s", "duration_s")}
        print(f"| {n:,} | {med['max_stall_s']:.2f} | {med['stalls_over_100ms']:g} | {med['stalls_over_1s']:g} "
              f"| {med['wall_s']:.2f} | {med['duration_s']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
