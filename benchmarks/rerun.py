"""Benchmark `engine rerun`: what a rerun from one function saves. Reports numbers; asserts nothing.

    python benchmarks/rerun.py [--repeats 3] [--backend process] [--out results/rerun.json]

The workload is the `tree` part's (`apps/research_tree/app.py`: example 8's research tree, depth
3 × branching 10, 1,111 research + 111 synthesise calls, every model request a 200 ms sleep).
Per repeat, in a fresh state directory: `engine run` of the tree, then `engine rerun RUN --from
synthesise` with a copy of the app whose synthesis prompt differs (the README's scenario). For
both, the run's own duration as stored (started_at to ended_at, executor start-ups included) and
the calls executed and reused (`engine show --json`). The rerun's ideal is its critical path: the
3 synthesise levels (the research calls hand off by tail call and are reused), 3 × 0.2 s; the
full run's is 7 × 0.2 s. Ray has no counterpart (a rerun there is a full run): the comparison is
the rerun against the full run on the same machine, in the same repeat.
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

REPO = Path(__file__).resolve().parents[1]
TREE = REPO / "benchmarks" / "apps" / "research_tree"
INPUT = {"question": "What made 2008 possible?", "branching": 10, "max_depth": 3}
ENGINE = [sys.executable, "-m", "engine.cli"]


def engine(*args: str, state_dir: Path, timeout: float = 600) -> dict[str, Any]:
    proc = subprocess.run([*ENGINE, *args, "--json", "--state-dir", str(state_dir)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"bench: engine {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def measured(run_id: str, state_dir: Path) -> dict[str, Any]:
    info = engine("show", run_id, state_dir=state_dir)
    c = info["calls"]
    return {"run_id": run_id, "status": info["status"], "duration_s": info["duration"], "calls": c["total"],
            "executed": c["executed"], "reused": c["reused"], "executions": c["executions"]}


def one(backend: str, tmp: Path) -> dict[str, Any]:
    state_dir = tmp / "state"
    code = tmp / "code"
    shutil.copytree(TREE, code)
    app = code / "app.py"
    text = app.read_text()
    changed = text.replace("notes from {len(children)} sub-agents", "a new synthesis prompt over {len(children)} notes")
    assert changed != text
    try:
        first = engine("run", f"{app}:research", "--input", json.dumps(INPUT), "--backend", backend,
                       state_dir=state_dir)
        app.write_text(changed)
        began = time.monotonic()
        again = engine("rerun", first["run_id"], "--from", "synthesise", str(app), "--backend", backend,
                       state_dir=state_dir)
        wall = time.monotonic() - began
        return {"run": measured(first["run_id"], state_dir),
                "rerun": {**measured(again["run_id"], state_dir), "wall_s": round(wall, 3)},
                "loadavg_1m": os.getloadavg()[0]}
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="process", choices=["process", "docker"])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "rerun.json"))
    args = parser.parse_args()
    rows = []
    load_before = os.getloadavg()[0]
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="engine-bench-rerun-") as tmp:
            row = one(args.backend, Path(tmp))
        rows.append(row)
        print(f"#{i + 1}: run {row['run']['duration_s']:.2f} s ({row['run']['executions']} executions), "
              f"rerun from synthesise {row['rerun']['duration_s']:.2f} s ({row['rerun']['executed']} executed, "
              f"{row['rerun']['reused']} reused), load {row['loadavg_1m']:.1f}", file=sys.stderr)
    run_s = statistics.median(r["run"]["duration_s"] for r in rows)
    rerun_s = statistics.median(r["rerun"]["duration_s"] for r in rows)
    out = {"date": time.strftime("%Y-%m-%d"), "backend": args.backend, "input": INPUT, "repeats": rows,
           "cores": os.cpu_count(), "python": sys.version.split()[0],
           "loadavg_1m": [load_before, os.getloadavg()[0]],
           "median_run_s": run_s, "median_rerun_s": rerun_s, "rerun_over_run": round(rerun_s / run_s, 3),
           "ideal_run_s": 7 * 0.2, "ideal_rerun_s": 3 * 0.2}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "repeats"}, indent=2))


if __name__ == "__main__":
    main()
