"""Benchmark the engine beside Ray and Tensorlake on this machine, in one run. Reports numbers; asserts nothing.

    python benchmarks/run.py [--parts fanout,docker,cold,chain,tree,resume,large,tensorlake]
                             [--sizes 100,1000,10000] [--repeats 3] [--cold-repeats 5]
                             [--backends process,docker] [--chain 200] [--no-ray]
                             [--max-minutes 20] [--out results/latest.json]

Parts (all by default; they run in the order cold, chain, fanout/docker, tree, resume, large,
tensorlake, and `--max-minutes` skips what is left once the budget is spent — the JSON says so):

- `fanout` — `apps/fanout.py` (N + 2 calls) on the process backend, beside Ray's local mode
  (`ray_fanout.py`, in the peers venv) in the same repeat. For each N and repeat, the engine runs
  as a user runs it: `python -m engine.cli run benchmarks/apps/fanout.py:fanout --input N --json
  --backend B --state-dir <fresh tmp dir>`, timed twice: the CLI process's wall time (start to
  exit) and the run's own duration as stored (`engine show RUN_ID --json`: started_at to
  ended_at, executor start-up included).
- `docker` — the same fan-out on `--backend docker`, in the same repeats (with Ray beside it even
  when `fanout` is not selected).
- `cold` — cold start on docker: `cold_start.py` runs `apps/one_call.py:one` in a fresh process
  and notes when each step happens (container create/start, the executor listening, Initialize,
  the call); beside it, plain `docker run` of the runtime image to the first byte on a socket
  (the floor), and the process backend's cold start (`engine run`) for reference.
- `ramp` — `warm.py`: `apps/ramp/app.py`, 10 calls of 2 s with `max_containers` 10, and 6 with
  6, per backend, as a first run and run again in the same state directory: the run's duration
  (ideal: just over 2 s), how many calls were running 0.5 s and 1 s after the first one started,
  and when all were, after the first and after the calls were made.
- `first_call` — `warm.py`: an `engine server` per backend with its warm pool of blank
  executors, and one without: creation → dispatch of the first call of a function with no
  executor yet (store timestamps), and POST → result; with the warm pool also for
  `apps/one_call_models.py` (a pydantic model in and out, as most applications have).
- `chain` — `apps/chain.py:hop` (K + 1 sequential tail calls) with K and with 1, per backend,
  beside Ray's sequential round trips: the warm per-hop latency.
- `tree` — `apps/research_tree/app.py`: example 8's recursive research tree (depth 3 ×
  branching 10: 1,111 research + 111 synthesise calls) with the LLM replaced by a 200 ms sleep,
  per backend, against the critical-path ideal (7 sequential requests × 200 ms).
- `resume` — `apps/resume/app.py`: 1,000 branches of 50 ms, the engine SIGKILLed once half have
  succeeded, then `engine resume`: seconds to finish, and how many calls that had finished before
  the kill executed again (read from the store before the resume, and from `engine show --json`
  after it).
- `large` — `apps/large.py:pass_on`: one value of 1, 16 and 128 MiB handed from one function to
  another (`measure.future(make.future(mb))`: `make` returns `bytes(mb MiB)`, `measure` its
  length), and the same with 0 MiB, the fixed cost of the three calls and their executors'
  start-ups; per backend and repeat, the run's stored duration, and the transfer's throughput
  mb / (duration(mb) - duration(0)) in MiB/s. A value above 1 MiB goes from `make`'s executor to
  the store and on to `measure`'s through their exchange directories (files adopted by rename and
  mapped, docs/architecture.md), and the engine's number includes hashing and fsyncing
  it to the state directory (every result is checkpointed), while Ray's (`ray_large.py`, peers
  venv, same repeat, sizes 0, 1, 16, 128 after one small warm-up call) keeps it in its
  shared-memory object store. From the store's timestamps, each run also splits the transfer into
  `make`'s call (create, pickle into its exchange directory, `Blobs.Adopt`: hash, fsync), the
  hand-off, and `measure`'s call (map, unpickle), each from its dispatch: free of executor start-ups.
- `tensorlake` — the fan-out in Tensorlake's `run_local_application` (`tensorlake_fanout.py`,
  peers venv), for each size it finishes within 5 minutes; larger sizes are skipped (and why).

Medians over the repeats go in the Markdown tables printed at the end; every raw number, the
machine's facts, the load average and the settings the engine ran with go in
`benchmarks/results/latest.json`. Every container and process this starts is removed before it
exits; containers an engine run left behind are counted in `leaks` (an engine bug) and removed.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import sqlite3
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
APPS = HERE / "apps"
PEERS_PYTHON = HERE / ".venv-peers" / "bin" / "python"
ENGINE_CLI = [sys.executable, "-m", "engine.cli"]

PARTS = ("fanout", "docker", "cold", "chain", "tree", "resume", "large", "tensorlake", "ramp", "first_call")
FANOUT = f"{APPS / 'fanout.py'}:fanout"
CHAIN = f"{APPS / 'chain.py'}:hop"
ONE_CALL = f"{APPS / 'one_call.py'}:one"
TREE = f"{APPS / 'research_tree' / 'app.py'}:research"
RESUME = f"{APPS / 'resume' / 'app.py'}:branches"
LARGE = f"{APPS / 'large.py'}:pass_on"
LARGE_MIB = (1, 16, 128)  # sizes of the large value; 0 (the fixed cost) is run beside them
MIB = 1024 * 1024
TREE_INPUT = {"question": "What made 2008 possible?", "branching": 10, "max_depth": 3}
TREE_LLM_S = 0.2  # apps/research_tree/app.py: LLM_SECONDS
TREE_CRITICAL_PATH = 7  # 4 research levels down, 3 synthesise levels up
# The tree's pools: the app's engine.yaml (what a user sets for I/O-bound calls), and the same
# with one executor per function (what scale-out costs on a small machine).
TREE_CONFIGS: list[tuple[str, Path | None]] = [
    ("engine.yaml", None),
    ("one_executor.yaml", APPS / "research_tree" / "one_executor.yaml"),
]
RESUME_N = 1000
RESUME_BRANCH_S = 0.05  # apps/resume/app.py: BRANCH_SECONDS
RESUME_SLOTS = 16  # apps/resume/engine.yaml: 2 executors × 8 calls
TENSORLAKE_LIMIT_S = 300.0  # "where it finishes within 5 minutes"
COLD_TARGET_S = 1.0
HOP_TARGET_MS = 2.0
FLOOR_LABEL = "engine-bench"

# Engine processes this benchmark started (pid) and the runs they made: containers labelled with
# either are removed at exit if an engine left them behind.
_ENGINE_PIDS: set[int] = set()
_RUN_IDS: set[str] = set()
# Child processes still running (each in its own session): stopped at exit.
_CHILDREN: set[subprocess.Popen[Any]] = set()
_LEAKS: list[dict[str, Any]] = []


def log(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def median(values: list[Any]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


class Budget:
    """`--max-minutes`: once spent, the remaining work is skipped (and listed as skipped)."""

    def __init__(self, minutes: float) -> None:
        self.began = time.monotonic()
        self.minutes = minutes
        self.skipped: list[str] = []

    def spent(self) -> float:
        return (time.monotonic() - self.began) / 60

    def allows(self, what: str) -> bool:
        if self.spent() <= self.minutes:
            return True
        log(f"{self.spent():.1f} min spent: skipping {what} (--max-minutes {self.minutes:g})")
        self.skipped.append(what)
        return False


# --- processes ---------------------------------------------------------------------------


def run_cmd(cmd: list[str], timeout: float, *, cwd: Path = REPO, env: dict[str, str] | None = None,
            engine: bool = False, peak: dict[str, float] | None = None,
            ) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run a command in its own session; on timeout interrupt it (an engine stops its executors
    on SIGINT), then kill its whole session. Returns the result and its wall time. With `peak`,
    its `rss_mb` is the process's own peak resident memory (VmHWM: the engine's scheduler, not
    its executors), read every 0.1 s while it runs."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    _CHILDREN.add(proc)
    if engine:
        _ENGINE_PIDS.add(proc.pid)
    watch = None
    if peak is not None:
        watch = threading.Thread(target=_watch_peak_rss, args=(proc, peak), daemon=True)
        watch.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_child(proc)
        raise TimeoutError(f"`{' '.join(cmd)}` took more than {timeout:g} s") from None
    finally:
        _CHILDREN.discard(proc)
        if watch is not None:
            watch.join()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), time.perf_counter() - start


def _watch_peak_rss(proc: subprocess.Popen[Any], peak: dict[str, float]) -> None:
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak["rss_mb"] = max(peak.get("rss_mb", 0.0), int(line.split()[1]) / 1024)
        except (OSError, ValueError):
            pass  # exited (or a zombie) between poll and read
        time.sleep(0.1)


def stop_child(proc: subprocess.Popen[Any]) -> None:
    """Interrupt a child (an engine stops its executors on SIGINT), then kill its session."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            with_suppress(os.killpg, proc.pid, signal.SIGKILL)
            proc.communicate()
    else:
        with_suppress(os.killpg, proc.pid, signal.SIGKILL)  # what it left in its session


def engine_containers(label: str) -> list[str]:
    proc = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={label}"], capture_output=True,
                          text=True)
    return proc.stdout.split() if proc.returncode == 0 else []


def check_left_behind(run_id: str, when: str) -> int:
    """Containers of a finished run that are still there: the engine should have removed them."""
    ids = engine_containers(f"engine.run={run_id}")
    if ids:
        _LEAKS.append({"run_id": run_id, "when": when, "containers": len(ids)})
        log(f"run {run_id} left {len(ids)} container(s) behind ({when}); removing them")
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
    return len(ids)


def with_suppress(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except (ProcessLookupError, PermissionError):
        pass


def cleanup() -> None:
    """Everything this benchmark started: child processes still running, floor containers, and
    containers of engine runs it started (by run id, or by the pid of an engine process that
    never reported its run)."""
    for proc in list(_CHILDREN):
        stop_child(proc)
    _CHILDREN.clear()
    if shutil.which("docker") is None:
        return
    ids = set(engine_containers(f"{FLOOR_LABEL}=1"))
    for run_id in _RUN_IDS:
        ids.update(engine_containers(f"engine.run={run_id}"))
    host = socket.gethostname()
    for pid in _ENGINE_PIDS:
        for cid in engine_containers(f"engine.owner_pid={pid}"):
            out = subprocess.run(["docker", "inspect", "-f", '{{index .Config.Labels "engine.owner_host"}}', cid],
                                 capture_output=True, text=True).stdout.strip()
            if out == host:
                ids.add(cid)
    if ids:
        subprocess.run(["docker", "rm", "-f", *sorted(ids)], capture_output=True)
        log(f"removed {len(ids)} container(s) left at exit")


# --- the engine --------------------------------------------------------------------------


def engine_run(target: str, value: Any, backend: str, config: Path | None, timeout: float) -> dict[str, Any]:
    """One `engine run` in a fresh state directory: its wall time, and its duration as stored."""
    state_dir = Path(tempfile.mkdtemp(prefix="engine-bench-"))
    cmd = [*ENGINE_CLI, "run", target, "--input", json.dumps(value), "--json", "--backend", backend,
           "--state-dir", str(state_dir)]
    if config is not None:
        cmd += ["--config", str(config)]
    try:
        peak: dict[str, float] = {}
        proc, wall = run_cmd(cmd, timeout, engine=True, peak=peak)
        if proc.returncode != 0:
            raise SystemExit(f"bench: `{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        outcome = json.loads(proc.stdout.strip().splitlines()[-1])
        _RUN_IDS.add(outcome["run_id"])
        show = subprocess.run([*ENGINE_CLI, "show", outcome["run_id"], "--json", "--state-dir", str(state_dir)],
                              cwd=REPO, capture_output=True, text=True, timeout=timeout, check=True)
        info = json.loads(show.stdout)
        first = first_dispatch(state_dir, outcome["run_id"])
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    left = check_left_behind(outcome["run_id"], "after engine run exited") if backend == "docker" else 0
    return {"wall_s": wall, "duration_s": info["duration"], "status": info["status"],
            "result": outcome["result"], "calls": info["calls"]["total"],
            "executions": info["calls"]["executions"], "run_id": outcome["run_id"],
            "containers_left": left, "loadavg_1m": os.getloadavg()[0],
            "scheduler_peak_rss_mb": peak.get("rss_mb"), **first}


def first_dispatch(state_dir: Path, run_id: str) -> dict[str, Any]:
    """Where the run's duration went, read from the store (`engine show` lists no call start
    times): the root call's dispatch splits it into the first executor's start-up (noisy: a fresh
    process importing grpc) and the calls themselves; per function, when its first call was
    created and started and its last one ended, in seconds from the run's start. For chains and
    trees, the per-hop and per-level figures below."""
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
    out: dict[str, Any] = {"to_first_dispatch_s": root.started_at - t0,
                           "after_first_dispatch_s": run.ended_at - root.started_at, "timeline": timeline}
    if root.function == "hop":
        out["hops"] = hop_stats(calls)
    if root.function == "research":
        out["levels"] = tree_levels(calls, t0)
    return out


def hop_stats(calls: list[Any]) -> dict[str, Any]:
    """A chain's hops in dispatch order. A hop is split at the next hop's creation (its row is
    made when the scheduler processes the tail call): dispatch → the tail call processed (the Run
    round trip over the stream and the function) and → the next hop dispatched (the scheduler:
    checkpoint, queue, pump). A tail caller's own `ended_at` is rewritten when the chain's value
    finally arrives, so it cannot be used here."""
    hops = sorted((c for c in calls if c.started_at is not None), key=lambda c: c.started_at)
    if len(hops) < 2:
        return {}
    pairs = list(zip(hops, hops[1:], strict=False))
    rpc = [(b.created_at - a.started_at) * 1000 for a, b in pairs]
    sched = [(b.started_at - b.created_at) * 1000 for _, b in pairs]
    intervals = [(b.started_at - a.started_at) * 1000 for a, b in pairs]
    return {"hops": len(hops), "mean_interval_ms": statistics.mean(intervals),
            "median_interval_ms": statistics.median(intervals), "p90_interval_ms": pct(intervals, 0.9),
            "median_rpc_ms": median(rpc), "median_scheduler_ms": median(sched)}


def tree_levels(calls: list[Any], t0: float) -> dict[str, Any]:
    """Per (function, depth): calls, first dispatch and last end from the run's start, and the
    most that ran at once — how close each level came to running all its calls in parallel."""
    by_id = {c.call_id: c for c in calls}
    depth: dict[str, int] = {}

    def depth_of(c: Any) -> int:
        if c.call_id not in depth:
            parent = by_id.get(c.parent_id or "")
            if parent is None:
                depth[c.call_id] = 0
            elif c.function == "synthesise":  # returned by a research call, at its depth
                depth[c.call_id] = depth_of(parent)
            else:
                depth[c.call_id] = depth_of(parent) + 1
        return depth[c.call_id]

    levels: dict[str, dict[str, Any]] = {}
    for c in calls:
        if c.started_at is None or c.ended_at is None:
            continue
        key = f"{c.function}@{depth_of(c)}"
        lv = levels.setdefault(key, {"calls": 0, "spans": []})
        lv["calls"] += 1
        lv["spans"].append((c.started_at, c.ended_at))
    out = {}
    for key, lv in sorted(levels.items(), key=lambda kv: min(s for s, _ in kv[1]["spans"])):
        spans = lv["spans"]
        events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
        running = peak = 0
        for _, step in events:
            running += step
            peak = max(peak, running)
        out[key] = {"calls": lv["calls"], "first_start": round(min(s for s, _ in spans) - t0, 3),
                    "last_end": round(max(e for _, e in spans) - t0, 3), "max_parallel": peak}
    return out


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def work_phase(row: dict[str, Any]) -> float | None:
    t = row.get("timeline", {}).get("work")
    if not t or t["first_start"] is None or t["last_end"] is None:
        return None
    return float(t["last_end"] - t["first_start"])


def app_settings(target: str, config: Path | None) -> dict[str, Any]:
    """The settings an app really runs with: decorators merged with its engine.yaml. Loaded in
    a child process: the apps share module and function names, and must not meet in one."""
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from engine.app import load_app\n"
        "from engine.scheduler.scheduler import default_max_executors\n"
        "app = load_app(sys.argv[1], Path(sys.argv[2]) if sys.argv[2] else None)\n"
        "print(json.dumps({'config_file': str(app.config_path) if app.config_path else None,\n"
        "  'max_executors': app.config.max_executors or default_max_executors(),\n"
        "  'idle_timeout_s': app.config.idle_timeout if app.config.idle_timeout is not None else 10.0,\n"
        "  'functions': {n: {'concurrency': s.config.concurrency, 'max_containers': s.config.max_containers,\n"
        "    'min_containers': s.config.min_containers, 'warm_containers': s.config.warm_containers,\n"
        "    'cpu': s.config.cpu, 'memory_gb': s.config.memory} for n, s in sorted(app.functions.items())}}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, target, str(config or "")], cwd=REPO,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def engine_settings(config: Path | None) -> dict[str, Any]:
    return {
        "fanout.py:fanout": app_settings(FANOUT, config),
        "chain.py:hop": app_settings(CHAIN, config),
        "one_call.py:one": app_settings(ONE_CALL, None),
        "research_tree/app.py:research": app_settings(TREE, None),
        "resume/app.py:branches": app_settings(RESUME, None),
        "large.py:pass_on": app_settings(LARGE, None),
    }


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


def runtime_image() -> str:
    """Build (or find) the runtime image first, so that no measured run pays for a build."""
    proc = subprocess.run([*ENGINE_CLI, "image", "build"], cwd=REPO, capture_output=True, text=True,
                          timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"bench: `engine image build` failed:\n{proc.stderr[-3000:]}")
    return runtime_tag()


def runtime_tag() -> str:
    """The runtime image tag for the engine source as it is now (it hashes engine/)."""
    code = "from engine.images import runtime_image_tag; print(runtime_image_tag())"
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()


# --- Ray and Tensorlake --------------------------------------------------------------------


def ensure_peers() -> bool:
    try:
        subprocess.run(["bash", str(HERE / "setup_peers.sh")], check=True, timeout=900)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log(f"could not set up the peers venv ({exc}); Ray and Tensorlake are skipped")
        return False
    return PEERS_PYTHON.exists()


def ray_run(n: int, chain: int, timeout: float) -> dict[str, Any]:
    cmd = [str(PEERS_PYTHON), str(HERE / "ray_fanout.py"), "--n", str(n)]
    if chain > 1:
        cmd += ["--chain", str(chain)]
    proc, wall = run_cmd(cmd, timeout, cwd=HERE)
    if proc.returncode != 0:
        raise SystemExit(f"bench: `{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    out["loadavg_1m"] = os.getloadavg()[0]
    return out


def ray_large_run(sizes: list[int], timeout: float) -> dict[str, Any]:
    cmd = [str(PEERS_PYTHON), str(HERE / "ray_large.py"), "--mb", ",".join(str(mb) for mb in sizes)]
    proc, wall = run_cmd(cmd, timeout, cwd=HERE)
    if proc.returncode != 0:
        raise SystemExit(f"bench: `{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    out["loadavg_1m"] = os.getloadavg()[0]
    return out


def tensorlake_run(n: int, timeout: float) -> dict[str, Any]:
    cmd = [str(PEERS_PYTHON), str(HERE / "tensorlake_fanout.py"), "--n", str(n)]
    proc, wall = run_cmd(cmd, timeout, cwd=HERE)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` exited {proc.returncode}: {proc.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    out["loadavg_1m"] = os.getloadavg()[0]
    return out


# --- parts ---------------------------------------------------------------------------------


def summarize_fanout(rows: list[dict[str, Any]], n: int) -> dict[str, Any]:
    e_dur = median([r["duration_s"] for r in rows])
    return {
        "calls": rows[0]["calls"],
        "duration_s": [r["duration_s"] for r in rows],
        "wall_s": [r["wall_s"] for r in rows],
        "median_duration_s": e_dur, "median_wall_s": median([r["wall_s"] for r in rows]),
        "calls_per_s": (n + 2) / e_dur if e_dur else None,
        # The n work calls alone, first dispatch to last end: executors already up.
        "work_phase_s": [work_phase(r) for r in rows],
        "median_work_phase_s": median([w for r in rows if (w := work_phase(r)) is not None]),
        # The `engine run` process's own peak resident memory (its executors not included).
        "median_peak_rss_mb": median([m for r in rows if (m := r.get("scheduler_peak_rss_mb")) is not None]),
        "runs": rows,
    }


def part_fanout(args: argparse.Namespace, results: dict[str, Any], backends: list[str], with_ray: bool,
                config: Path | None, budget: Budget) -> None:
    for n in args.sizes:
        if not budget.allows(f"fan-out {n}"):
            results["skipped_sizes"].append(n)
            continue
        rows: dict[str, list[dict[str, Any]]] = {b: [] for b in backends}
        ray_rows: list[dict[str, Any]] = []
        for i in range(args.repeats):
            for backend in backends:
                row = engine_run(FANOUT, n, backend, config, args.timeout)
                if row["status"] != "succeeded" or row["result"] != n * (n - 1):
                    raise SystemExit(f"bench: engine fanout({n}) on {backend} gave {row['status']} {row['result']!r}")
                rows[backend].append(row)
                log(f"fan-out {n} #{i + 1}: engine {backend} {row['duration_s']:.2f} s in-run, "
                    f"{row['wall_s']:.2f} s wall")
            if with_ray:
                r = ray_run(n, 0, args.timeout)
                ray_rows.append(r)
                results["settings"]["ray_version"] = r["ray_version"]
                log(f"fan-out {n} #{i + 1}: ray {r['workload_s']:.2f} s workload, "
                    f"{r['init_s']:.2f} s init, {r['wall_s']:.2f} s wall")
        entry: dict[str, Any] = {"n": n, "engine": {b: summarize_fanout(rows[b], n) for b in backends},
                                 "ray": None, "ratios": {}}
        if ray_rows:
            r_work = median([r["workload_s"] for r in ray_rows])
            entry["ray"] = {
                key: [r[key] for r in ray_rows]
                for key in ("init_s", "workload_s", "workload_warm_s", "shutdown_s", "wall_s", "loadavg_1m")
            }
            entry["ray"].update(
                median_workload_s=r_work, median_workload_warm_s=median([r["workload_warm_s"] for r in ray_rows]),
                median_init_s=median([r["init_s"] for r in ray_rows]),
                median_wall_s=median([r["wall_s"] for r in ray_rows]),
                calls_per_s=(n + 1) / r_work if r_work else None,
            )
            for b, e in entry["engine"].items():
                entry["ratios"][b] = {
                    "in_run": ratio(e["median_duration_s"], r_work),
                    "warm": ratio(e["median_work_phase_s"], entry["ray"]["median_workload_warm_s"]),
                    "end_to_end": ratio(e["median_wall_s"], entry["ray"]["median_wall_s"]),
                    # Issue 16's measure: `engine run` start to exit against Ray's in-run.
                    "end_to_end_vs_ray_in_run": ratio(e["median_wall_s"], r_work),
                }
        results["fanout"].append(entry)
        write_results(args.out, results)


def part_cold(args: argparse.Namespace, results: dict[str, Any], backends: list[str], budget: Budget) -> None:
    """Cold start: the docker probe, the floors, and the process backend's for reference."""
    sys.path.insert(0, str(HERE))
    import cold_start

    image = results["settings"]["runtime_image"]
    gateway = bridge_gateway()
    probes: list[dict[str, Any]] = []
    floors: dict[str, list[float]] = {name: [] for name in cold_start.FLOORS}
    process_rows: list[dict[str, Any]] = []
    # `engine run` as a user runs it, with the warm pool (blank containers started while the
    # application loads, engine.backends.early): start to exit.
    docker_runs: list[dict[str, Any]] = []
    for i in range(args.cold_repeats):
        if not budget.allows(f"cold start repeat {i + 1}"):
            break
        if "docker" in backends:
            row = engine_run(ONE_CALL, 1, "docker", None, args.timeout)
            docker_runs.append(row)
            log(f"cold start #{i + 1}: engine run on docker with its warm pool {row['wall_s']:.2f} s start to exit, "
                f"{row['duration_s']:.3f} s in-run")
            probe = cold_probe(args.timeout)
            probes.append(probe)
            for name in cold_start.FLOORS:
                floors[name].append(cold_start.docker_run_floor(image, gateway, name, FLOOR_LABEL))
            log(f"cold start #{i + 1}: engine docker {probe['phases']['cold_start_s']:.3f} s in-run, "
                f"{probe['phases']['end_to_end_s']:.2f} s end to end; docker run floor "
                f"{floors['imports'][-1]:.3f} s")
        if "process" in backends:
            row = engine_run(ONE_CALL, 1, "process", None, args.timeout)
            process_rows.append(row)
            log(f"cold start #{i + 1}: engine process {row['duration_s']:.3f} s in-run, {row['wall_s']:.2f} s wall")
    out: dict[str, Any] = {"repeats": max(len(probes), len(process_rows)), "runtime_image": image,
                           "floor_variants": cold_start.FLOORS}
    if probes:
        keys = list(probes[0]["phases"])
        out["docker"] = {
            "phases_median_s": {k: median([p["phases"].get(k) for p in probes]) for k in keys},
            "floors_s": floors,
            "floors_median_s": {k: median(v) for k, v in floors.items()},
            "probes": probes,
        }
        cold = out["docker"]["phases_median_s"]["cold_start_s"]
        floor = out["docker"]["floors_median_s"]["imports"]
        out["docker"]["engine_share_above_docker_run_s"] = cold - floor if cold and floor else None
    if docker_runs:
        out["docker_engine_run"] = {
            "wall_s": [r["wall_s"] for r in docker_runs], "duration_s": [r["duration_s"] for r in docker_runs],
            "median_wall_s": median([r["wall_s"] for r in docker_runs]),
            "median_duration_s": median([r["duration_s"] for r in docker_runs]),
            "median_to_first_dispatch_s": median([r.get("to_first_dispatch_s") for r in docker_runs]),
            "runs": docker_runs,
        }
    if process_rows:
        out["process"] = {
            "duration_s": [r["duration_s"] for r in process_rows], "wall_s": [r["wall_s"] for r in process_rows],
            "median_duration_s": median([r["duration_s"] for r in process_rows]),
            "median_wall_s": median([r["wall_s"] for r in process_rows]),
            "median_to_first_dispatch_s": median([r.get("to_first_dispatch_s") for r in process_rows]),
            "runs": process_rows,
        }
    results["cold_start"] = out
    write_results(args.out, results)


def cold_probe(timeout: float) -> dict[str, Any]:
    # The probe decomposes a true cold start: no warm pool (a container started for the call).
    env = {**os.environ, "BENCH_SPAWN_T": repr(time.time()), "ENGINE_WARM_EXECUTORS": "0"}
    proc, wall = run_cmd([sys.executable, str(HERE / "cold_start.py")], timeout, env=env, engine=True)
    exited = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"bench: cold_start.py exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    sys.path.insert(0, str(HERE))
    import cold_start

    probe: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    _RUN_IDS.add(probe["run_id"])
    probe["exited"] = exited
    probe["phases"] = cold_start.phases(probe)
    probe["wall_s"] = wall
    probe["loadavg_1m"] = os.getloadavg()[0]
    probe["containers_left"] = check_left_behind(probe["run_id"], "after the cold-start probe exited")
    del probe["events"]  # the phases keep what matters; the raw spans are long
    return probe


def bridge_gateway() -> str:
    """The address containers reach the host at (the docker backend's callback host)."""
    sys.path.insert(0, str(REPO))
    from engine.backends.docker import DockerBackend

    backend = DockerBackend(instance_id=f"bench-{secrets.token_hex(4)}")
    return backend.callback_host


def part_chain(args: argparse.Namespace, results: dict[str, Any], backends: list[str], with_ray: bool,
               config: Path | None, budget: Budget) -> None:
    k = args.chain
    rows: dict[str, list[dict[str, Any]]] = {b: [] for b in backends}
    ray_hops: list[float] = []
    for i in range(args.repeats):
        if not budget.allows(f"chain repeat {i + 1}"):
            break
        for backend in backends:
            one = engine_run(CHAIN, 1, backend, config, args.timeout)
            long = engine_run(CHAIN, k, backend, config, args.timeout)
            per_hop = (long["duration_s"] - one["duration_s"]) / (k - 1) * 1000
            # The same difference taken from the root call's dispatch on: free of the noise of
            # the executor's start-up, which the duration difference only cancels on average.
            per_hop_dispatch = (long["after_first_dispatch_s"] - one["after_first_dispatch_s"]) / (k - 1) * 1000
            hops = long.get("hops", {})
            rows[backend].append({
                "duration_1_s": one["duration_s"], "duration_k_s": long["duration_s"],
                "after_first_dispatch_1_s": one["after_first_dispatch_s"],
                "after_first_dispatch_k_s": long["after_first_dispatch_s"],
                "per_hop_ms": per_hop, "per_hop_from_dispatch_ms": per_hop_dispatch, "hops": hops,
                "loadavg_1m": long["loadavg_1m"], "run_ids": [one["run_id"], long["run_id"]],
            })
            log(f"chain {k} #{i + 1}: engine {backend} {per_hop_dispatch:.2f} ms per hop from the first "
                f"dispatch ({per_hop:.2f} ms from the durations; hop median "
                f"{hops.get('median_interval_ms', float('nan')):.2f} ms)")
        if with_ray:
            r = ray_run(1, k, args.timeout)
            ray_hops.append(r["chain_per_hop_ms"])
            results["settings"]["ray_version"] = r["ray_version"]
            log(f"chain {k} #{i + 1}: ray {r['chain_per_hop_ms']:.2f} ms per hop")
    engine: dict[str, Any] = {}
    for backend, brows in rows.items():
        if not brows:
            continue
        engine[backend] = {
            "runs": brows,
            "median_per_hop_ms": median([r["per_hop_ms"] for r in brows]),
            "median_per_hop_from_dispatch_ms": median([r["per_hop_from_dispatch_ms"] for r in brows]),
            "median_hop_rpc_ms": median([r["hops"].get("median_rpc_ms") for r in brows]),
            "median_hop_scheduler_ms": median([r["hops"].get("median_scheduler_ms") for r in brows]),
            "median_hop_interval_ms": median([r["hops"].get("median_interval_ms") for r in brows]),
        }
    ray_med = median(ray_hops)
    results["chain"] = {
        "k": k, "engine": engine,
        "ray": {"per_hop_ms": ray_hops, "median_per_hop_ms": ray_med} if ray_hops else None,
        "ratios": {b: ratio(e["median_per_hop_from_dispatch_ms"], ray_med) for b, e in engine.items()},
    }
    write_results(args.out, results)


def part_tree(args: argparse.Namespace, results: dict[str, Any], backends: list[str], budget: Budget) -> None:
    """The research tree under each of TREE_CONFIGS (engine.yaml, then one executor per function)."""
    ideal = TREE_CRITICAL_PATH * TREE_LLM_S
    out: dict[str, Any] = {"llm_seconds": TREE_LLM_S, "critical_path_calls": TREE_CRITICAL_PATH, "ideal_s": ideal,
                           "input": TREE_INPUT, "calls": 1222, "configs": []}
    results["tree"] = out
    for name, config in TREE_CONFIGS:
        rows: dict[str, list[dict[str, Any]]] = {b: [] for b in backends}
        for i in range(args.repeats):
            if not budget.allows(f"tree ({name}) repeat {i + 1}"):
                break
            for backend in backends:
                row = engine_run(TREE, TREE_INPUT, backend, config, args.timeout)
                if row["status"] != "succeeded" or row["calls"] != 1222:
                    raise SystemExit(f"bench: research tree on {backend} gave {row['status']} with {row['calls']} calls")
                row.pop("result")  # the whole tree, as JSON: long, and not a measurement
                rows[backend].append(row)
                leaves = row.get("levels", {}).get("research@3", {})
                log(f"tree ({name}) #{i + 1}: engine {backend} {row['duration_s']:.2f} s in-run "
                    f"({row['duration_s'] / ideal:.1f}× the {ideal:.1f} s ideal), {row['wall_s']:.2f} s wall; "
                    f"leaves {leaves.get('first_start')}–{leaves.get('last_end')} s, at most "
                    f"{leaves.get('max_parallel')} at once")
        entry: dict[str, Any] = {"name": name, "config_file": str((config or APPS / "research_tree" / "engine.yaml")
                                                                  .relative_to(REPO)),
                                 "settings": app_settings(TREE, config), "engine": {}}
        for backend, brows in rows.items():
            if not brows:
                continue
            dur = median([r["duration_s"] for r in brows])
            leaves = [r.get("levels", {}).get("research@3", {}) for r in brows]
            entry["engine"][backend] = {
                "duration_s": [r["duration_s"] for r in brows], "wall_s": [r["wall_s"] for r in brows],
                "median_duration_s": dur, "median_wall_s": median([r["wall_s"] for r in brows]),
                "ratio_to_ideal": dur / ideal if dur else None,
                "median_leaves_phase_s": median([lv["last_end"] - lv["first_start"] for lv in leaves if lv]),
                "median_leaves_max_parallel": median([lv.get("max_parallel") for lv in leaves]),
                "runs": brows,
            }
        out["configs"].append(entry)
        write_results(args.out, results)


def part_ramp(args: argparse.Namespace, results: dict[str, Any], backends: list[str], budget: Budget) -> None:
    """10 calls of 2 s (max_containers 10) and 6 (max_containers 6), and the 10 after a root
    that works 1 s before it fans out (as-is, and with their executors declared warm), per
    backend, each as a first run and run again (`warm.py` RAMP_CASES)."""
    import warm

    rows: list[dict[str, Any]] = []
    results["ramp"] = {"runs": rows}
    cases = [(n, APPS / "ramp" / config, think) for n, config, think in warm.RAMP_CASES]
    for i in range(args.repeats):
        for backend in backends:
            for (n, config, think), again in ((case, again) for again in (False, True) for case in cases):
                which = "run again" if again else "first run"
                if not budget.allows(f"ramp {n} (think {think:g} s) on {backend} ({which}) repeat {i + 1}"):
                    return
                row = warm.ramp(backend, n, 2.0, config, args.timeout, again=again, think=think)
                rows.append(row)
                log(f"ramp {n} × 2 s after {think:g} s on {backend}, {which}, #{i + 1}: {row['duration_s']:.2f} s "
                    f"in-run (ideal just over {row['ideal_s']:g} s); {row['running_after_0_5_s']} of {n} running 0.5 s after the "
                    f"first, {row['running_after_1_s']} after 1 s, all after {row['all_running_after_s']:.2f} s "
                    f"({row['all_running_after_created_s']:.2f} s after they were made)")
        write_results(args.out, results)


def part_first_call(args: argparse.Namespace, results: dict[str, Any], backends: list[str], budget: Budget) -> None:
    """A served first call with and without the warm pool, per backend (`warm.py`)."""
    import warm

    rows: list[dict[str, Any]] = []
    results["first_call"] = {"runs": rows}
    for i in range(args.repeats):
        for backend in backends:
            for app, size in (("plain", 2), ("models", 2), ("plain", 0)):
                if not budget.allows(f"first call of {app} on {backend} (warm {size}) repeat {i + 1}"):
                    return
                row = warm.first_call(backend, size, args.timeout, app=app)
                rows.append(row)
                log(f"served first call of {app} on {backend}, warm pool {size}: created → dispatched "
                    f"{row['created_to_dispatch_ms']:.1f} ms, POST → result {row['post_to_result_s']:.3f} s")
        write_results(args.out, results)


def part_resume(args: argparse.Namespace, results: dict[str, Any], backends: list[str], budget: Budget) -> None:
    rows: dict[str, list[dict[str, Any]]] = {b: [] for b in backends}
    for i in range(args.repeats):
        if not budget.allows(f"resume repeat {i + 1}"):
            break
        for backend in backends:
            row = resume_once(backend, RESUME_N, args.timeout)
            rows[backend].append(row)
            log(f"resume #{i + 1}: engine {backend} killed at {row['branches_done_at_kill']}/{RESUME_N} branches; "
                f"resume finished in {row['resume_wall_s']:.2f} s ({row['resume_in_run_s']:.2f} s in-run); "
                f"{row['finished_reexecuted']} finished call(s) re-executed")
    out: dict[str, Any] = {"n": RESUME_N, "branch_seconds": RESUME_BRANCH_S, "branch_slots": RESUME_SLOTS,
                           "engine": {}}
    for backend, brows in rows.items():
        if not brows:
            continue
        out["engine"][backend] = {
            "resume_wall_s": [r["resume_wall_s"] for r in brows],
            "resume_in_run_s": [r["resume_in_run_s"] for r in brows],
            "median_resume_wall_s": median([r["resume_wall_s"] for r in brows]),
            "median_resume_in_run_s": median([r["resume_in_run_s"] for r in brows]),
            "median_remaining_ideal_s": median([r["remaining_ideal_s"] for r in brows]),
            "finished_reexecuted_total": sum(r["finished_reexecuted"] for r in brows),
            "runs": brows,
        }
    results["resume"] = out
    write_results(args.out, results)


def large_phases(row: dict[str, Any]) -> dict[str, float | None]:
    """A large-value run's transfer from the store's timestamps: `make`'s call from its dispatch to
    its result checkpointed (create, pickle into a file, `Blobs.Adopt`: hash, fsync), the hand-off to
    `measure`'s dispatch (the scheduler), and `measure`'s call (map the blob, unpickle, result back).
    The hand-off is negative when `measure` was given the value before `make` was checkpointed
    (deferred adoption): the two calls overlap, and the overlap counts once."""
    t = row.get("timeline", {})
    mk, ms = t.get("make", {}), t.get("measure", {})
    if None in (mk.get("first_start"), mk.get("last_end"), ms.get("first_start"), ms.get("last_end")):
        return {"make_s": None, "handoff_s": None, "measure_s": None, "from_dispatch_s": None}
    make_s, measure_s = mk["last_end"] - mk["first_start"], ms["last_end"] - ms["first_start"]
    handoff_s = ms["first_start"] - mk["last_end"]
    return {"make_s": make_s, "handoff_s": handoff_s, "measure_s": measure_s,
            "from_dispatch_s": make_s + measure_s + min(handoff_s, 0.0)}


def throughput(mb: int, seconds: float | None, baseline: float | None) -> float | None:
    """MiB/s of moving `mb` MiB that took `seconds` where 0 MiB took `baseline`."""
    if seconds is None or baseline is None or seconds <= baseline:
        return None
    return mb / (seconds - baseline)


def part_large(args: argparse.Namespace, results: dict[str, Any], backends: list[str], with_ray: bool,
               budget: Budget) -> None:
    """One large value from `make` to `measure`, per size and backend, with 0 MiB as the fixed
    cost; Ray's same workload in the same repeat."""
    sizes = [0, *LARGE_MIB]
    rows: dict[str, dict[int, list[dict[str, Any]]]] = {b: {mb: [] for mb in sizes} for b in backends}
    ray_rows: list[dict[str, Any]] = []
    for i in range(args.repeats):
        if not budget.allows(f"large repeat {i + 1}"):
            break
        for mb in sizes:
            for backend in backends:
                row = engine_run(LARGE, mb, backend, None, args.timeout)
                if row["status"] != "succeeded" or row["result"] != mb * MIB:
                    raise SystemExit(f"bench: engine pass_on({mb}) on {backend} gave {row['status']} {row['result']!r}")
                row.update(large_phases(row))
                rows[backend][mb].append(row)
                zero = rows[backend][0][-1]
                log(f"large {mb} MiB #{i + 1}: engine {backend} {row['duration_s']:.2f} s in-run "
                    f"({fmt(throughput(mb, row['duration_s'], zero['duration_s']), 0)} MiB/s above 0 MiB); "
                    f"make {fmt(row['make_s'], 3)} s, hand-off {fmt(row['handoff_s'], 3)} s, "
                    f"measure {fmt(row['measure_s'], 3)} s")
        if with_ray:
            r = ray_large_run(sizes, args.timeout)
            ray_rows.append(r)
            results["settings"]["ray_version"] = r["ray_version"]
            w = r["workload_s"]
            log(f"large #{i + 1}: ray " + ", ".join(
                f"{mb} MiB {w[str(mb)]:.3f} s ({fmt(throughput(mb, w[str(mb)], w['0']), 0)} MiB/s)"
                for mb in sizes if mb))
    engine: dict[str, Any] = {}
    for backend, by_size in rows.items():
        if not by_size[0]:
            continue
        base = median([r["duration_s"] for r in by_size[0]])
        base_dispatch = median([r["from_dispatch_s"] for r in by_size[0]])
        per_size: dict[str, Any] = {}
        for mb, brows in by_size.items():
            dur = median([r["duration_s"] for r in brows])
            disp = median([r["from_dispatch_s"] for r in brows])
            per_size[str(mb)] = {
                "duration_s": [r["duration_s"] for r in brows], "wall_s": [r["wall_s"] for r in brows],
                "median_duration_s": dur, "median_wall_s": median([r["wall_s"] for r in brows]),
                # mb / (median in-run(mb) - median in-run(0)): the table's figure; the executors'
                # start-ups cancel only on average (at 1 and 16 MiB they are noisier than the transfer).
                "mib_per_s": throughput(mb, dur, base) if mb else None,
                # The same from the calls' dispatches (make's call + measure's call): no start-ups.
                "median_from_dispatch_s": disp,
                "mib_per_s_from_dispatch": throughput(mb, disp, base_dispatch) if mb else None,
                "median_make_s": median([r["make_s"] for r in brows]),
                "median_handoff_s": median([r["handoff_s"] for r in brows]),
                "median_measure_s": median([r["measure_s"] for r in brows]),
                "loadavg_1m": [r["loadavg_1m"] for r in brows],
                "runs": [{k: v for k, v in r.items() if k != "result"} for r in brows],
            }
        engine[backend] = per_size
    ray: dict[str, Any] | None = None
    if ray_rows:
        ray = {"init_s": [r["init_s"] for r in ray_rows], "warmup_s": [r["warmup_s"] for r in ray_rows],
               "wall_s": [r["wall_s"] for r in ray_rows], "loadavg_1m": [r["loadavg_1m"] for r in ray_rows],
               "sizes": {}}
        ray_base = median([r["workload_s"]["0"] for r in ray_rows])
        for mb in sizes:
            w = median([r["workload_s"][str(mb)] for r in ray_rows])
            ray["sizes"][str(mb)] = {"workload_s": [r["workload_s"][str(mb)] for r in ray_rows],
                                     "median_workload_s": w,
                                     "mib_per_s": throughput(mb, w, ray_base) if mb else None}
    ratios: dict[str, Any] = {}
    for backend, per_size in engine.items():
        ratios[backend] = {}
        for mb in LARGE_MIB:
            e, r = per_size[str(mb)], (ray or {}).get("sizes", {}).get(str(mb), {})
            # engine ÷ Ray in time: in-run, and the transfer (Ray's throughput ÷ the engine's).
            ratios[backend][str(mb)] = {"in_run": ratio(e["median_duration_s"], r.get("median_workload_s")),
                                        "transfer": ratio(r.get("mib_per_s"), e["mib_per_s"])}
    results["large"] = {"sizes_mib": list(LARGE_MIB), "baseline_mib": 0, "engine": engine, "ray": ray,
                        "ratios": ratios}
    write_results(args.out, results)


def _read_calls(db: Path, run_id: str | None) -> tuple[str | None, list[tuple[str, str, str, int]]]:
    """Read-only look at the store while (or after) an engine writes it."""
    if not db.exists():
        return None, []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        if run_id is None:
            row = conn.execute("SELECT run_id FROM runs LIMIT 1").fetchone()
            if row is None:
                return None, []
            run_id = row[0]
        calls = conn.execute("SELECT call_id, function, status, executions FROM calls WHERE run_id = ?",
                             (run_id,)).fetchall()
        return run_id, calls
    except sqlite3.OperationalError:
        return run_id, []  # the schema is still being created
    finally:
        conn.close()


def _executor_pids(engine_pid: int) -> list[int]:
    """Process-backend executors started by `engine_pid` (they name it with --parent-pid)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"engine.executor" in argv and b"--parent-pid" in argv:
            i = argv.index(b"--parent-pid")
            if i + 1 < len(argv) and argv[i + 1] == str(engine_pid).encode():
                found.append(int(entry.name))
    return found


def resume_once(backend: str, n: int, timeout: float) -> dict[str, Any]:
    """Start a run, SIGKILL its engine once half the branches succeeded, resume it, and count
    re-executions of calls that had finished before the kill."""
    state_dir = Path(tempfile.mkdtemp(prefix="engine-bench-resume-"))
    db = state_dir / "engine.db"
    cmd = [*ENGINE_CLI, "run", RESUME, "--input", str(n), "--json", "--backend", backend,
           "--state-dir", str(state_dir)]
    try:
        began = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        _CHILDREN.add(proc)
        _ENGINE_PIDS.add(proc.pid)
        run_id: str | None = None
        done = 0
        try:
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"bench: the run to be killed ended first ({proc.returncode}): "
                                     f"{proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
                if time.perf_counter() - began > timeout:
                    raise SystemExit("bench: the resume benchmark's run never got half way")
                run_id, calls = _read_calls(db, run_id)
                done = sum(1 for c in calls if c[1] == "branch" and c[2] == "succeeded")
                if done >= n // 2:
                    break
                time.sleep(0.01)
            executors = _executor_pids(proc.pid)
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = time.perf_counter() - began
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                stop_child(proc)  # only when something above failed: the kill is SIGKILL
            proc.wait(timeout=30)
            _CHILDREN.discard(proc)
            if proc.stderr:
                proc.stderr.close()
        assert run_id is not None
        _RUN_IDS.add(run_id)
        _, before = _read_calls(db, run_id)
        finished = {cid: ex for cid, _fn, status, ex in before if status in ("succeeded", "tail")}
        statuses: dict[str, int] = {}
        for _cid, _fn, status, _ex in before:
            statuses[status] = statuses.get(status, 0) + 1
        orphans = len(engine_containers(f"engine.run={run_id}")) if backend == "docker" else 0
        # Process-backend executors exit by themselves once their engine is gone (they poll
        # their parent); give them 10 s, then kill what is left (and report it).
        executors_gone_s = None
        stray: list[int] = []
        if backend == "process":
            deadline = time.perf_counter() + 10
            while True:
                alive = [p for p in executors if _alive(p)]
                if not alive:
                    executors_gone_s = time.perf_counter() - began - killed_at
                    break
                if time.perf_counter() > deadline:
                    stray = alive
                    for pid in stray:
                        with_suppress(os.kill, pid, signal.SIGKILL)
                    break
                time.sleep(0.02)
        branches_left = n - sum(1 for _cid, fn, status, _ex in before if fn == "branch" and status == "succeeded")

        resume_cmd = [*ENGINE_CLI, "resume", run_id, "--json", "--state-dir", str(state_dir)]
        result, resume_wall = run_cmd(resume_cmd, timeout, engine=True)
        if result.returncode != 0:
            raise SystemExit(f"bench: `{' '.join(resume_cmd)}` exited {result.returncode}:\n{result.stderr[-3000:]}")
        outcome = json.loads(result.stdout.strip().splitlines()[-1])
        show = subprocess.run([*ENGINE_CLI, "show", run_id, "--json", "--state-dir", str(state_dir)],
                              cwd=REPO, capture_output=True, text=True, timeout=timeout, check=True)
        info = json.loads(show.stdout)
        sys.path.insert(0, str(REPO))
        from engine.store import open_store, store_url

        store = open_store(store_url(state_dir))
        try:
            row = store.get_run(run_id)
            stored = store.load_calls(run_id)
        finally:
            store.close()
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    # Where the resumed run's time went: executor start-up, the remaining branches, the end.
    resumed = row.resumed_at or 0.0
    redone = [c for c in stored if c.started_at is not None and c.started_at >= resumed]
    first_start = min((c.started_at for c in redone if c.started_at is not None), default=None)
    last_branch = max((c.ended_at for c in redone if c.function == "branch" and c.ended_at), default=None)
    phases = {
        "to_first_dispatch_s": first_start - resumed if first_start else None,
        "branches_s": last_branch - first_start if first_start and last_branch else None,
        "after_branches_s": row.ended_at - last_branch if row.ended_at and last_branch else None,
        "calls_executed": len(redone),
    }
    after = {c["id"]: c["executions"] for c in info["call_list"]}
    reexecuted = [cid for cid, ex in finished.items() if after.get(cid, ex) > ex]
    left = check_left_behind(run_id, "after engine resume exited") if backend == "docker" else 0
    return {
        "run_id": run_id, "status": outcome["status"], "result_ok": outcome["result"] == n * (n - 1) // 2,
        "killed_after_s": killed_at, "branches_done_at_kill": done,
        "calls_at_kill_by_status": statuses, "finished_before_kill": len(finished),
        "finished_reexecuted": len(reexecuted), "reexecuted_ids": reexecuted[:10],
        "executions_total": info["calls"]["executions"], "calls_total": info["calls"]["total"],
        "running_at_kill_executed_again": statuses.get("running", 0),
        "orphan_containers_before_resume": orphans, "executors_at_kill": len(executors),
        "executors_gone_after_kill_s": executors_gone_s, "executors_alive_10s_after_kill": len(stray),
        "resume_wall_s": resume_wall,
        "resume_in_run_s": (row.ended_at - row.resumed_at) if row.ended_at and row.resumed_at else None,
        "remaining_ideal_s": branches_left * RESUME_BRANCH_S / RESUME_SLOTS, "resumed_phases": phases,
        "containers_left": left, "loadavg_1m": os.getloadavg()[0],
    }


def _alive(pid: int) -> bool:
    """Running (not a zombie waiting for its parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:].split()[0] != "Z"


def part_tensorlake(args: argparse.Namespace, results: dict[str, Any], budget: Budget) -> None:
    """Tensorlake's local runner on the fan-out, smallest size first. A size is skipped when a
    smaller one, scaled linearly, would already take more than 5 minutes, or when it does."""
    out: dict[str, Any] = {"limit_s": TENSORLAKE_LIMIT_S, "sizes": [], "skipped": []}
    results["tensorlake"] = out
    previous: tuple[int, float] | None = None
    for n in sorted(args.sizes):
        if previous is not None:
            projected = previous[1] * n / previous[0]
            if projected > TENSORLAKE_LIMIT_S:
                out["skipped"].append({"n": n, "reason": f"N={previous[0]} took {previous[1]:.0f} s; even "
                                       f"linear growth gives {projected:.0f} s > {TENSORLAKE_LIMIT_S:.0f} s"})
                log(f"tensorlake fan-out {n}: skipped ({out['skipped'][-1]['reason']})")
                continue
        if not budget.allows(f"tensorlake fan-out {n}"):
            out["skipped"].append({"n": n, "reason": "benchmark time budget (--max-minutes) spent"})
            continue
        runs: list[dict[str, Any]] = []
        for i in range(args.repeats):
            try:
                r = tensorlake_run(n, TENSORLAKE_LIMIT_S + 30)
            except TimeoutError:
                out["skipped"].append({"n": n, "reason": f"did not finish within {TENSORLAKE_LIMIT_S:.0f} s"})
                log(f"tensorlake fan-out {n}: did not finish within {TENSORLAKE_LIMIT_S:.0f} s")
                break
            runs.append(r)
            out["version"] = r["tensorlake_version"]
            log(f"tensorlake fan-out {n} #{i + 1}: {r['run_s']:.2f} s run, {r['wall_s']:.2f} s wall")
            if r["run_s"] > 60:
                break  # one run of a size this slow is the measurement; repeats would eat the budget
        if not runs:
            break
        if runs[-1]["run_s"] > TENSORLAKE_LIMIT_S:
            out["skipped"].append({"n": n, "reason": f"took {runs[-1]['run_s']:.0f} s > {TENSORLAKE_LIMIT_S:.0f} s"})
        out["sizes"].append({
            "n": n, "runs": len(runs), "run_s": [r["run_s"] for r in runs], "wall_s": [r["wall_s"] for r in runs],
            "import_s": [r["import_s"] for r in runs], "loadavg_1m": [r["loadavg_1m"] for r in runs],
            "median_run_s": median([r["run_s"] for r in runs]), "median_wall_s": median([r["wall_s"] for r in runs]),
        })
        previous = (n, median([r["run_s"] for r in runs]) or 0.0)
        write_results(args.out, results)


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
    docker = subprocess.run(["docker", "version", "-f", "{{.Server.Version}}"], capture_output=True, text=True)
    if docker.returncode == 0:
        facts["docker_server"] = docker.stdout.strip()
        storage = subprocess.run(["docker", "info", "-f", "{{.Driver}} cgroup v{{.CgroupVersion}}"],
                                 capture_output=True, text=True)
        facts["docker_storage"] = storage.stdout.strip()
        running = subprocess.run(["docker", "ps", "-q"], capture_output=True, text=True).stdout.split()
        facts["containers_running_at_start"] = len(running)  # others' work on a shared machine
    return facts


# --- report ------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or not theirs:
        return None
    return ours / theirs


def _x(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}×"


def _pair(a: float | None, b: float | None, backends: list[str]) -> str:
    parts = []
    if "process" in backends:
        parts.append(_x(a))
    if "docker" in backends:
        parts.append(_x(b))
    return " · ".join(parts) or "–"


def _met(ok: bool | None) -> str:
    return "–" if ok is None else ("**met**" if ok else "**missed**")


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """The bars from issue 3, as measured here."""
    out: dict[str, Any] = {}
    cold = (results.get("cold_start") or {}).get("docker")
    if cold:
        value = cold["phases_median_s"]["cold_start_s"]
        out["cold_start_s"] = {"target": COLD_TARGET_S, "value": value, "met": value <= COLD_TARGET_S,
                               "engine_share_above_docker_run_s": cold["engine_share_above_docker_run_s"]}
    run_docker = (results.get("cold_start") or {}).get("docker_engine_run")
    if run_docker:
        value = run_docker["median_wall_s"]
        out["engine_run_one_call_docker_s"] = {"target": 1.0, "value": value, "met": value <= 1.0}
    chain = (results.get("chain") or {}).get("engine", {})
    for backend, e in chain.items():
        value = e["median_per_hop_from_dispatch_ms"]
        out[f"hop_ms_{backend}"] = {"target": HOP_TARGET_MS, "value": value, "met": value <= HOP_TARGET_MS}
    for row in results.get("fanout", []):
        e, r = row["engine"].get("docker"), row.get("ray")
        if row["n"] == 10000 and e and r:
            out["docker_10k_vs_ray"] = {
                "engine_in_run_s": e["median_duration_s"], "ray_workload_s": r["median_workload_s"],
                "met_in_run": e["median_duration_s"] < r["median_workload_s"],
                "engine_wall_s": e["median_wall_s"], "ray_wall_s": r["median_wall_s"],
                "met_end_to_end": e["median_wall_s"] < r["median_wall_s"],
            }
    return out


def markdown(results: dict[str, Any]) -> str:
    backends = results["settings"]["backends"]
    tl = {s["n"]: s for s in (results.get("tensorlake") or {}).get("sizes", [])}
    tl_skip = {s["n"]: s["reason"] for s in (results.get("tensorlake") or {}).get("skipped", [])}
    t = results.get("targets", {})
    lines = [
        "| workload | engine, process | engine, docker | Ray (local) | Tensorlake (local) | engine ÷ Ray (process · docker) | target |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]

    def eng(row: dict[str, Any], backend: str, key: str, digits: int = 2) -> str:
        e = row["engine"].get(backend)
        return fmt(e[key], digits) if e else "–"

    def tl_cell(n: int, key: str) -> str:
        if n in tl:
            s = tl[n]
            note = f" ({s['runs']} run)" if s["runs"] == 1 and results["settings"]["repeats"] > 1 else ""
            return fmt(s[key]) + note
        if n in tl_skip:
            return "skipped¹"
        return "–"

    for row in results.get("fanout", []):
        n, r, ra = row["n"], row.get("ray") or {}, row.get("ratios", {})
        target = ""
        if n == 10000 and "docker_10k_vs_ray" in t:
            target = f"docker < Ray: {_met(t['docker_10k_vs_ray']['met_in_run'])}"
        lines.append(
            f"| fan-out {n:,} ({n + 2:,} calls): in-run, s | {eng(row, 'process', 'median_duration_s')} | "
            f"{eng(row, 'docker', 'median_duration_s')} | {fmt(r.get('median_workload_s'))} | {tl_cell(n, 'median_run_s')} | "
            f"{_pair(ra.get('process', {}).get('in_run'), ra.get('docker', {}).get('in_run'), backends)} | {target} |"
        )
    for row in results.get("fanout", []):
        n, r, ra = row["n"], row.get("ray") or {}, row.get("ratios", {})
        lines.append(
            f"| fan-out {n:,}: warm, the {n:,} work calls only, s | {eng(row, 'process', 'median_work_phase_s')} | "
            f"{eng(row, 'docker', 'median_work_phase_s')} | {fmt(r.get('median_workload_warm_s'))} | – | "
            f"{_pair(ra.get('process', {}).get('warm'), ra.get('docker', {}).get('warm'), backends)} | |"
        )
    for row in results.get("fanout", []):
        n, r, ra = row["n"], row.get("ray") or {}, row.get("ratios", {})
        target = ""
        if n == 10000 and "docker_10k_vs_ray" in t:
            target = f"docker < Ray: {_met(t['docker_10k_vs_ray']['met_end_to_end'])}"
        lines.append(
            f"| fan-out {n:,}: end to end (process start to exit), s | {eng(row, 'process', 'median_wall_s')} | "
            f"{eng(row, 'docker', 'median_wall_s')} | {fmt(r.get('median_wall_s'))} | {tl_cell(n, 'median_wall_s')} | "
            f"{_pair(ra.get('process', {}).get('end_to_end'), ra.get('docker', {}).get('end_to_end'), backends)} | {target} |"
        )
    for row in results.get("fanout", []):
        n, r, ra = row["n"], row.get("ray") or {}, row.get("ratios", {})
        lines.append(
            f"| fan-out {n:,}: engine end to end ÷ Ray in-run | – | – | – | – | "
            f"{_pair(ra.get('process', {}).get('end_to_end_vs_ray_in_run'), ra.get('docker', {}).get('end_to_end_vs_ray_in_run'), backends)} | ≤ 0.5 |"
        )
    for row in results.get("fanout", []):
        lines.append(
            f"| fan-out {row['n']:,}: `engine run` peak RSS (scheduler), MB | {eng(row, 'process', 'median_peak_rss_mb', 0)} | "
            f"{eng(row, 'docker', 'median_peak_rss_mb', 0)} | – | – | | |"
        )
    cold = results.get("cold_start")
    if cold:
        d, p = cold.get("docker") or {}, cold.get("process") or {}
        ph = d.get("phases_median_s", {})
        lines.append(
            f"| cold start: first call of a function with no executor → its result (run's stored duration), s | "
            f"{fmt(p.get('median_duration_s'))} | {fmt(ph.get('cold_start_s'))} | – | – | | "
            f"≤ {COLD_TARGET_S:g} s (docker): {_met(t.get('cold_start_s', {}).get('met'))} |"
        )
        lines.append(
            f"| cold start floor: `docker run` of the runtime image to first byte on a socket "
            f"(imports grpc, cloudpickle, pydantic), s | – | {fmt(d.get('floors_median_s', {}).get('imports'))} | – | – | | |"
        )
        lines.append(
            f"| cold start: the engine's own share above `docker run`, s | – | "
            f"{fmt(d.get('engine_share_above_docker_run_s'))} | – | – | | |"
        )
        lines.append(
            f"| cold start end to end, no warm pool (the probe): process start to exit, s | – | "
            f"{fmt(ph.get('end_to_end_s'))} | – | – | | |"
        )
        w = cold.get("docker_engine_run") or {}
        lines.append(
            f"| one-call `engine run`, warm pool on: process start to exit, s | {fmt(p.get('median_wall_s'))} | "
            f"{fmt(w.get('median_wall_s'))} | – | – | | ≤ 1.0 s (docker) |"
        )
    chain = results.get("chain")
    if chain:
        e, r = chain["engine"], chain.get("ray") or {}
        marks = " · ".join(f"{b} {_met(t.get(f'hop_ms_{b}', {}).get('met'))}" for b in e)
        lines.append(
            f"| chain of {chain['k']} tail calls: warm per hop, ms | "
            f"{fmt(e.get('process', {}).get('median_per_hop_from_dispatch_ms'))} | "
            f"{fmt(e.get('docker', {}).get('median_per_hop_from_dispatch_ms'))} | {fmt(r.get('median_per_hop_ms'))} | – | "
            f"{_pair(chain['ratios'].get('process'), chain['ratios'].get('docker'), backends)} | "
            f"≤ {HOP_TARGET_MS:g} ms: {marks} |"
        )
    tree: dict[str, Any] = results.get("tree") or {}
    for cfg in tree.get("configs", []):
        e = cfg["engine"]
        if not e:
            continue
        pools = ", ".join(f"{fn} {f['concurrency']}×{f['max_containers']}"
                          for fn, f in cfg["settings"].get("functions", {}).items())
        lines.append(
            f"| research tree depth 3 × branching 10 ({tree['calls']:,} calls), **LLM replaced by a "
            f"{tree['llm_seconds'] * 1000:.0f} ms sleep**; `{cfg['config_file']}` (calls × executors: {pools}): "
            f"in-run, s | {fmt(e.get('process', {}).get('median_duration_s'))} | "
            f"{fmt(e.get('docker', {}).get('median_duration_s'))} | – | – | | critical path {tree['critical_path_calls']} × "
            f"{tree['llm_seconds'] * 1000:.0f} ms = {tree['ideal_s']:.1f} s: "
            f"{_pair(e.get('process', {}).get('ratio_to_ideal'), e.get('docker', {}).get('ratio_to_ideal'), backends)} "
            f"the ideal |"
        )
    res = results.get("resume")
    if res and res["engine"]:
        e = res["engine"]
        lines.append(
            f"| resume: {res['n']:,} branches × {res['branch_seconds'] * 1000:.0f} ms, engine SIGKILLed half way; "
            f"`engine resume` to exit, s | {fmt(e.get('process', {}).get('median_resume_wall_s'))} | "
            f"{fmt(e.get('docker', {}).get('median_resume_wall_s'))} | – | – | | remaining work alone ≈ "
            f"{fmt(median([x.get('median_remaining_ideal_s') for x in e.values()]))} s |"
        )
        lines.append(
            f"| resume: the resumed run's in-run time, s | {fmt(e.get('process', {}).get('median_resume_in_run_s'))} | "
            f"{fmt(e.get('docker', {}).get('median_resume_in_run_s'))} | – | – | | |"
        )
        lines.append(
            f"| resume: calls finished before the kill that executed again (all repeats) | "
            f"{e.get('process', {}).get('finished_reexecuted_total', '–')} | "
            f"{e.get('docker', {}).get('finished_reexecuted_total', '–')} | – | – | | must be 0: "
            f"{_met(all(x['finished_reexecuted_total'] == 0 for x in e.values()))} |"
        )
    large = results.get("large")
    if large and large["engine"]:
        e, r, ra = large["engine"], (large.get("ray") or {}).get("sizes", {}), large["ratios"]

        def lg(backend: str, mb: int, key: str, digits: int = 2) -> str:
            return fmt(e.get(backend, {}).get(str(mb), {}).get(key), digits)

        def lr(mb: int, key: str) -> str:
            return _pair(ra.get("process", {}).get(str(mb), {}).get(key),
                         ra.get("docker", {}).get(str(mb), {}).get(key), backends)

        lines.append(
            f"| one value passed from one function to another: 0 MiB (the fixed cost: 3 calls, executor "
            f"start-ups), in-run, s | {lg('process', 0, 'median_duration_s')} | {lg('docker', 0, 'median_duration_s')} | "
            f"{fmt(r.get('0', {}).get('median_workload_s'), 3)} | – | | |"
        )
        for mb in large["sizes_mib"]:
            lines.append(
                f"| one value of {mb} MiB passed from one function to another, in-run, s | "
                f"{lg('process', mb, 'median_duration_s')} | {lg('docker', mb, 'median_duration_s')} | "
                f"{fmt(r.get(str(mb), {}).get('median_workload_s'), 3)} | – | "
                f"{lr(mb, 'in_run')} | |"
            )
        for mb in large["sizes_mib"]:
            lines.append(
                f"| one value of {mb} MiB: transfer, MiB/s = {mb} / (in-run({mb}) − in-run(0)) | "
                f"{lg('process', mb, 'mib_per_s', 0)} | {lg('docker', mb, 'mib_per_s', 0)} | "
                f"{fmt(r.get(str(mb), {}).get('mib_per_s'), 0)} | – | "
                f"{lr(mb, 'transfer')} | from the calls' dispatches: "
                f"{' · '.join(lg(b, mb, 'mib_per_s_from_dispatch', 0) for b in ('process', 'docker') if b in backends)}"
                " MiB/s |"
            )
    return "\n".join(lines)


COLD_STEPS = [
    ("scheduler_to_start_executor_s", "run started → the backend is asked for an executor"),
    ("image_check_s", "image check (`inspect_image`, once per engine process) and hand-off to a thread"),
    ("container_create_s", "`create_container` (Docker API)"),
    ("container_start_s", "`start` (Docker API: runc starts the container's process)"),
    ("after_start_inspect_s", "`inspect_container` for the bridge IP"),
    ("executor_listening_s", "executor process: python, imports, gRPC server listening (connect polled every 20 ms)"),
    ("initialize_s", "Initialize: channel connect, unzip the code, import the app"),
    ("dispatch_s", "pool pump → call dispatched"),
    ("first_call_s", "the call: Run over the stream, result back, checkpointed"),
    ("finish_s", "run marked succeeded"),
    ("cold_start_s", "**cold start: run started → run ended (the steps above)**"),
]
OUTSIDE_STEPS = [
    ("interpreter_s", "around the run: process spawn → Python runs the first line"),
    ("engine_import_s", "around the run: importing the engine (runner, scheduler, docker backend)"),
    ("load_app_s", "around the run: loading the app (import, engine.yaml, zip the code)"),
    ("backend_setup_s", "around the run: backend set-up (docker client, runtime image tag and check)"),
    ("scheduler_start_s", "around the run: scheduler start (gRPC callback server, orphan clean-up)"),
    ("other_setup_s", "around the run: the rest before the run starts (store, run row)"),
    ("close_s", "around the run: after it, executors stopped (containers removed), store closed"),
    ("exit_s", "around the run: printing and interpreter exit"),
    ("end_to_end_s", "**end to end: process spawn → exit (all of the above)**"),
]


def cold_table(results: dict[str, Any]) -> str:
    d = (results.get("cold_start") or {}).get("docker")
    if not d:
        return ""
    ph, fl = d["phases_median_s"], d["floors_median_s"]
    lines = ["| cold start on docker, step (median of "
             f"{results['cold_start']['repeats']}) | s |", "| --- | ---: |"]
    for key, label in COLD_STEPS:
        lines.append(f"| {label} | {fmt(ph.get(key), 3)} |")
    for key, label in OUTSIDE_STEPS:
        lines.append(f"| {label} | {fmt(ph.get(key), 3)} |")
    for key, label in (("bare", "floor: `docker run` → first byte, python only"),
                       ("imports", "floor: `docker run` → first byte, importing grpc, cloudpickle, pydantic"),
                       ("executor", "`docker run` with the engine's container flags → first byte, importing "
                                    "engine.executor.server")):
        lines.append(f"| {label} | {fmt(fl.get(key), 3)} |")
    return "\n".join(lines)


def notes(results: dict[str, Any]) -> str:
    m, s = results["machine"], results["settings"]
    fan = s["engine"].get("fanout.py:fanout", {})
    fns = ", ".join(
        f"{name} concurrency {f['concurrency']} max_containers {f['max_containers'] or '-'}"
        for name, f in fan.get("functions", {}).items()
    )
    tree = s["engine"].get("research_tree/app.py:research", {})
    ray_init = median([x for row in results.get("fanout", []) for x in (row.get("ray") or {}).get("init_s", [])])
    tl = results.get("tensorlake") or {}
    skipped = "; ".join(f"N={x['n']}: {x['reason']}" for x in tl.get("skipped", []))
    text = (
        f"{m['nproc']} cores ({m.get('cpu_model', '?')}), {m.get('mem_total_gib', '?')} GiB, Python {m['python']}, "
        f"Docker {m.get('docker_server', '?')} ({m.get('docker_storage', '?')}), "
        f"engine {m.get('engine_version', '?')} ({m.get('engine_commit', '?')}, image {s.get('runtime_image', '?')}), "
        f"Ray {s.get('ray_version') or 'not run'} (num_cpus={s['ray_num_cpus']}), "
        f"Tensorlake {tl.get('version') or 'not run'}; median of {s['repeats']} repeats"
        f"{f' ({n} for cold start)' if (n := (results.get('cold_start') or {}).get('repeats')) else ''}. "
        f"1-minute load average {m['loadavg_at_start'][0]:.1f} at the start, "
        f"{m.get('loadavg_at_end', [0])[0]:.1f} at the end ({m.get('containers_running_at_start', '?')} other "
        f"containers running at the start: a shared machine). "
        f"Fan-out settings: {fns}; max_executors {fan.get('max_executors')}. "
        f"In-run = engine: the run's stored duration (executor start-up included); Ray: the workload after "
        f"`ray.init` (median init {fmt(ray_init)} s, not included); Tensorlake: `run_local_application` to "
        f"`output()`. Warm = engine: first to last `work` call, executors up; Ray: the workload again in the same "
        f"driver. End to end = the CLI / script process from start to exit. "
        f"Chain: per hop from the first hop's dispatch (executor up); Ray: a driver round trip "
        f"`ray.get(hop.remote(i))` per hop. "
        f"Tree: max_executors {tree.get('max_executors')}, idle_timeout {tree.get('idle_timeout_s')} s; "
        f"the pools are in each row. "
        f"Resume: apps/resume/engine.yaml (branch: 2 executors × 8 calls)."
    )
    if results.get("large"):
        text += (
            " Large value: in-run = engine: the run's stored duration (3 calls, executor start-ups "
            "included; the value pickled into `make`'s exchange directory, adopted into the store (hashed, "
            "fsynced: every result is checkpointed) and mapped by the consumer); Ray: "
            "`ray.get(measure.remote(make.remote(mb)))` after one small warm-up call, the value in "
            "its shared-memory object store. Transfer MiB/s = mb / (t(mb) − t(0)) of the medians; "
            "engine ÷ Ray there is Ray's MiB/s ÷ the engine's (the transfer's time ratio)."
        )
    if skipped:
        text += f" ¹ Tensorlake skipped: {skipped}."
    if results.get("leaks"):
        text += f" Containers left behind by engine runs (removed by the benchmark): {results['leaks']}."
    if results.get("skipped"):
        text += f" Skipped for time: {', '.join(results['skipped'])}."
    return text


# --- main --------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated, any of {','.join(PARTS)} (default: all)")
    parser.add_argument("--sizes", default="100,1000,10000",
                        help="fan-out sizes, comma-separated (default 100,1000,10000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cold-repeats", type=int, default=5, help="repeats of the cold start (default 5)")
    parser.add_argument("--backends", default="process,docker",
                        help="engine backends for cold/chain/tree/resume (default process,docker)")
    parser.add_argument("--backend", choices=["process", "docker"],
                        help="one backend only (older spelling of --backends)")
    parser.add_argument("--chain", type=int, default=200, help="hops of the chain benchmark (0: skip)")
    parser.add_argument("--no-ray", action="store_true", help="measure the engine (and Tensorlake) only")
    parser.add_argument("--work-concurrency", type=int, help="override work's concurrency (via engine.yaml)")
    parser.add_argument("--work-max-containers", type=int, help="override work's max_containers")
    parser.add_argument("--max-minutes", type=float, default=20,
                        help="skip the remaining work once this much time has gone (default 20)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds allowed for one process")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.json")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}: choose from {', '.join(PARTS)}")
    backends = [args.backend] if args.backend else [b.strip() for b in args.backends.split(",") if b.strip()]
    if args.chain <= 1 and "chain" in parts:
        parts.remove("chain")
    budget = Budget(args.max_minutes)
    atexit.register(cleanup)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(1))  # run the clean-up on the way out

    needs_docker = "docker" in parts or ("docker" in backends and set(parts) & {"cold", "chain", "tree", "resume", "large",
                                                                               "ramp", "first_call"})
    needs_peers = not args.no_ray and bool(set(parts) & {"fanout", "docker", "chain", "large"}) or "tensorlake" in parts
    peers = needs_peers and ensure_peers()
    with_ray = peers and not args.no_ray
    config = write_config(args)
    results: dict[str, Any] = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": machine_facts(),
        "settings": {"parts": parts, "backends": backends, "repeats": args.repeats,
                     "cold_repeats": args.cold_repeats, "sizes": args.sizes, "ray_num_cpus": 2,
                     "large_mib": list(LARGE_MIB), "engine": engine_settings(config), "ray_version": None,
                     "runtime_image": None},
        "fanout": [], "chain": None, "cold_start": None, "tree": None, "resume": None, "large": None,
        "tensorlake": None, "ramp": None, "first_call": None,
        "skipped_sizes": [], "skipped": budget.skipped, "leaks": _LEAKS,
    }
    if needs_docker:
        started = time.perf_counter()
        results["settings"]["runtime_image"] = runtime_image()
        log(f"runtime image {results['settings']['runtime_image']} ready ({time.perf_counter() - started:.1f} s)")

    try:
        if "cold" in parts:
            part_cold(args, results, backends, budget)
        if "chain" in parts:
            part_chain(args, results, backends, with_ray, config, budget)
        fan_backends = [b for b, part in (("process", "fanout"), ("docker", "docker")) if part in parts]
        if fan_backends:
            part_fanout(args, results, fan_backends, with_ray, config, budget)
        if "tree" in parts:
            part_tree(args, results, backends, budget)
        if "resume" in parts:
            part_resume(args, results, backends, budget)
        if "large" in parts:
            part_large(args, results, backends, with_ray, budget)
        if "tensorlake" in parts and peers:
            part_tensorlake(args, results, budget)
        if "ramp" in parts:
            part_ramp(args, results, backends, budget)
        if "first_call" in parts:
            part_first_call(args, results, backends, budget)
    finally:
        cleanup()

    if needs_docker:
        tag_now = runtime_tag()
        if tag_now != results["settings"]["runtime_image"]:
            results["settings"]["runtime_image_changed_to"] = tag_now  # engine/ edited during the run
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    results["elapsed_s"] = time.monotonic() - budget.began
    results["targets"] = targets(results)
    results["markdown"] = markdown(results)
    results["markdown_cold_start"] = cold_table(results)
    results["notes"] = notes(results)
    write_results(args.out, results)
    print(results["markdown"])
    print()
    if results["markdown_cold_start"]:
        print(results["markdown_cold_start"])
        print()
    print(results["notes"])
    log(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out} "
        f"in {results['elapsed_s'] / 60:.1f} min")
    return 0


def write_results(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
