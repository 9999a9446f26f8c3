"""Benchmark the fair share between runs on `engine server`. Reports numbers; asserts nothing.

    python benchmarks/fair_share.py [--backends process,docker] [--large 20000] [--small 10]
                                    [--small-runs 5] [--repeats 3] [--cold-root]
                                    [--json benchmarks/results/fair_share.json]

A real server on loopback (fresh state directory) serves `apps/fanout.py:fanout`: `fanout(n)`
is n `work` calls (2 executors × 16 slots) and a `total`, n + 2 calls. Per backend:

- **small alone** — `fanout(--small)` runs one after the other on a warm server (its executors
  up): each run's stored `duration` (start to end) and the time from its POST until a
  `GET /v1/runs/{id}` says `succeeded` (polled every 10 ms).
- **large alone** — `fanout(--large)`: its stored duration, and its throughput (calls / duration).
- **small in large** — `fanout(--large)` is submitted, and one second later `--small-runs` small
  runs one after the other, a second apart (fewer if the large run ends first): each small
  run's duration, and the large run's throughput beside them.

The root function `fanout` hands off by tail call, which releases its executor at once (by
design: `Dispatcher._after_call`), so without more every small run would wait for a new `fanout`
executor — a process or container start, slow on a machine the large run saturates — whatever
the dispatch order. The app is therefore deployed from a copy with an engine.yaml that keeps one
`fanout` executor warm (`functions: {fanout: {warm_containers: 1}}`, what a user who cares about
a small run's latency sets); `--cold-root` deploys it as it is.

"alone" and "in large" alternate, `--repeats` times each; the summary gives medians: the small
run's slowdown (in large ÷ alone; the aim is at most 2×) and the large run's throughput lost to
the small ones (the aim is at most 10 %). Running it with `PYTHONPATH` pointing at an older
checkout measures that code instead (the server and its executors import `engine` from there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import server_bench  # beside this file: its client and helpers
from server_bench import free_port, log, wait_serving

HERE = Path(__file__).resolve().parent
APP = HERE / "apps" / "fanout.py"


class Client(server_bench.Client):
    def __init__(self, port: int) -> None:
        super().__init__(port, timeout=120)

    def submit(self, n: int) -> str:
        status, accepted = self.call("POST", "/v1/applications/fanout/runs", n)
        assert status == 202, accepted
        return str(accepted["run_id"])

    def get(self, run_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/v1/runs/{run_id}")[1])

    def running(self) -> int:
        """Runs running now: a cheap question. `GET /v1/runs/{id}` of a run of 20,000 calls
        counts its calls by status, in the store, on the server's one loop: polled every 100 ms
        it slowed the run it watched by a factor of 4 here."""
        return int(self.call("GET", "/v1/runs?status=running&limit=1")[1]["total"])

    def wait_large(self, run_id: str, timeout: float = 900) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.wait(run_id, timeout=1)

    def wait(self, run_id: str, poll: float = 0.01, timeout: float = 900) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.get(run_id)
            if run["status"] in ("succeeded", "failed", "cancelled"):
                assert run["status"] == "succeeded", run
                return run
            time.sleep(poll)
        raise RuntimeError(f"run {run_id} did not finish within {timeout} s")


def small_run(client: Client, n: int) -> dict[str, float]:
    began = time.perf_counter()
    run = client.wait(client.submit(n))
    return {"duration_s": run["duration"], "post_to_result_s": time.perf_counter() - began}


def large_alone(client: Client, n: int) -> dict[str, Any]:
    run = client.wait_large(client.submit(n))
    return {"duration_s": run["duration"], "calls_per_s": (n + 2) / run["duration"]}


def small_in_large(client: Client, large: int, small: int, runs: int) -> dict[str, Any]:
    big = client.submit(large)
    smalls = []
    for _ in range(runs):
        time.sleep(1.0)
        if not client.running():
            break
        smalls.append(small_run(client, small))
    run = client.wait_large(big)
    return {"duration_s": run["duration"], "calls_per_s": (large + 2) / run["duration"], "small": smalls}


def project(state: Path, cold_root: bool) -> Path:
    """The app to deploy: fanout.py alone in a directory, with an engine.yaml unless `cold_root`."""
    root = state / "project"
    root.mkdir()
    (root / "fanout.py").write_text(APP.read_text())
    if not cold_root:
        (root / "engine.yaml").write_text("functions:\n  fanout: {warm_containers: 1}\n")
    return root / "fanout.py"


def serve(backend: str, state: Path, app: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**os.environ, "ENGINE_BACKEND": backend}
    env.pop("ENGINE_TOKEN", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "server", "--port", str(port), "--state-dir", str(state / "state"),
         "--backend", backend], stdout=subprocess.DEVNULL, stderr=open(state / "server.log", "wb"), env=env)
    wait_serving(server, port, 60, state / "server.log")
    deployed = subprocess.run([sys.executable, "-m", "engine.cli", "deploy", str(app),
                               "--server", f"http://127.0.0.1:{port}"], capture_output=True, text=True, env=env)
    if deployed.returncode:
        raise RuntimeError(deployed.stderr)
    return server, port


def bench(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="engine-fair-bench-"))
    server, port = serve(backend, state, project(state, args.cold_root))
    try:
        client = Client(port)
        for _ in range(3):  # warm: every function's executors up
            small_run(client, args.small)
        alone_small: list[dict[str, float]] = []
        alone_large: list[dict[str, Any]] = []
        mixed: list[dict[str, Any]] = []
        for i in range(args.repeats):
            order = ["alone", "mixed"] if i % 2 == 0 else ["mixed", "alone"]
            for what in order:
                if what == "alone":
                    alone_small += [small_run(client, args.small) for _ in range(5)]
                    log(f"{backend}: small alone {alone_small[-1]['duration_s']:.3f} s; large alone …")
                    alone_large.append(large_alone(client, args.large))
                    log(f"{backend}: large alone {alone_large[-1]['duration_s']:.1f} s")
                else:
                    mixed.append(small_in_large(client, args.large, args.small, args.small_runs))
                    durations = [s["duration_s"] for s in mixed[-1]["small"]]
                    log(f"{backend}: large with small runs {mixed[-1]['duration_s']:.1f} s; "
                        f"{len(durations)} small runs, median {statistics.median(durations or [0]):.3f} s")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)

    def med(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    small_alone = med([s["duration_s"] for s in alone_small])
    small_mixed_all = [s["duration_s"] for m in mixed for s in m["small"]]
    small_first = [m["small"][0]["duration_s"] for m in mixed if m["small"]]
    large_tp = med([r["calls_per_s"] for r in alone_large])
    mixed_tp = med([m["calls_per_s"] for m in mixed])
    summary = {
        "small_alone_s": small_alone,
        "small_alone_post_to_result_s": med([s["post_to_result_s"] for s in alone_small]),
        "small_in_large_s": med(small_mixed_all),
        "small_in_large_first_s": med(small_first),
        "small_in_large_post_to_result_s": med([s["post_to_result_s"] for m in mixed for s in m["small"]]),
        "small_slowdown": (med(small_mixed_all) or 0) / small_alone if small_alone else None,
        "large_alone_calls_per_s": large_tp,
        "large_with_small_calls_per_s": mixed_tp,
        "large_throughput_lost": 1 - mixed_tp / large_tp if large_tp and mixed_tp else None,
    }
    return {"summary": summary, "small_alone": alone_small, "large_alone": alone_large, "small_in_large": mixed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="process,docker")
    parser.add_argument("--large", type=int, default=20000)
    parser.add_argument("--small", type=int, default=10)
    parser.add_argument("--small-runs", type=int, default=5, help="small runs submitted into each large one")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cold-root", action="store_true",
                        help="deploy the app without keeping a `fanout` executor warm")
    parser.add_argument("--label", default="", help="recorded with the results (e.g. which code ran)")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "fair_share.json")
    args = parser.parse_args()
    import engine

    results: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "loadavg_before": os.getloadavg()},
        "engine": str(Path(engine.__file__).parent), "label": args.label,
        "settings": {"large": args.large, "small": args.small, "repeats": args.repeats, "small_runs": args.small_runs,
                     "warm_root": not args.cold_root,
                     "app": "benchmarks/apps/fanout.py:fanout (work: concurrency 16, max_containers 2)"},
        "backends": {},
    }
    for backend in args.backends.split(","):
        results["backends"][backend] = bench(backend, args)
        s = results["backends"][backend]["summary"]
        print(f"{backend}: small ({args.small} + 2 calls) alone {s['small_alone_s']:.3f} s, in a "
              f"{args.large}-call run {s['small_in_large_s']:.3f} s ({s['small_slowdown']:.1f}×; first "
              f"{s['small_in_large_first_s']:.3f} s); large alone {s['large_alone_calls_per_s']:.0f} calls/s, "
              f"with small runs {s['large_with_small_calls_per_s']:.0f} calls/s "
              f"({100 * s['large_throughput_lost']:+.1f} % lost)", flush=True)
    results["machine"]["loadavg_after"] = os.getloadavg()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
