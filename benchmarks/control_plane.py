"""Benchmark the control plane: the PostgreSQL store beside SQLite, a server taking over the runs
of a server killed with `kill -9`, and a burst of submissions across two servers with one killed.
Reports numbers; asserts nothing.

    python benchmarks/control_plane.py [--parts fanout,takeover,burst] [--repeats 3] [--takeovers 5]
                                       [--sizes 10000,1000] [--lease-ttls default,3] [--burst 500]
                                       [--out benchmarks/results/control_plane.json]

Needs root (network namespaces; PostgreSQL runs as the `postgres` user) and PostgreSQL 15's
binaries (`make postgres`). It builds what it needs and removes it: every server, executor,
PostgreSQL server and network namespace it made is gone when it exits, also on Ctrl-C, SIGTERM
or an error.

- `fanout` — `benchmarks/apps/fanout.py:fanout --input N` exactly as `run.py`'s fan-out part runs
  it (`python -m engine.cli run ... --json --backend process --state-dir <fresh dir>`), on the
  SQLite store (the state directory's) and on a private PostgreSQL server (tests/pglib.py, on
  loopback; a fresh database per repeat, `--store URL`), interleaved in the same repeats (the order
  alternates from one repeat to the next). Per run: the run's stored duration (`engine show RUN_ID
  --json` with the same store: started_at to ended_at), the CLI's wall time, and from the store
  the `work` calls' span (first dispatch to last end: executors up). The tables give medians and
  PostgreSQL ÷ SQLite. The issue's aim is within 1.5× of SQLite: reported, not asserted.
- `takeover` — two `engine server`s on one PostgreSQL store, each in its own network-namespace
  host (tests/integration/hostlib.py; process backend; token auth, since they listen on the hosts'
  addresses), the app tests/integration/server_apps/takeover_app.py. Each take-over submits four
  `steps` runs (8 sequential `step` calls of 0.4 s) to one server (alternately), waits until
  every run has checkpointed two steps, `kill -9`s the server that drives most of them, and polls
  the survivor (every 50 ms) for the time from the kill until it owns every one of the killed
  server's runs (`owner` of GET /v1/runs/ID against GET /healthz's `owner`) and until they have
  all succeeded. The lease each run had left at the kill is read from the store (`lease_expires`
  minus the database's clock), which gives the time from the last renewal to the take-over:
  the design bounds it by TTL + TTL/5 (the lease runs out, then the survivor's next scan). Steps
  that had finished before the kill and executed again are counted from the DAG's `executions`
  (must be 0), and the steps that were in flight and ran again from the lines `step` appends to a
  file. The killed server is restarted before the next take-over. Done `--takeovers` times with
  the default lease (ENGINE_LEASE_TTL unset: 10 s) and with ENGINE_LEASE_TTL=3, each on a fresh
  pair of servers and a fresh database.
- `burst` — the same two servers (default lease, fresh database): `--burst` concurrent submissions
  of `inc`, each with its own Idempotency-Key, alternating between the servers, each retried at
  the other server when its connection fails or it answers 5xx (test_takeover.py's
  `submit_burst`); the first server is `kill -9`ed once a third have been answered. Reported:
  accepted (202), refused, replayed (answered with a run the key already had), distinct runs,
  duplicates (submissions − distinct run ids, and runs in the store nobody was told of), succeeded,
  failed, wrong results, and the seconds until every run had finished (from the first POST and
  from the kill).

Medians go in Markdown tables printed at the end (and in the JSON under `markdown`); every raw
number, the machine's facts, the load average before and after (and beside each run), and the
settings go in the JSON. The engine processes get a temporary directory of their own (TMPDIR):
what they leave there is counted in `left_in_tmpdir`, then removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import hostlib  # noqa: E402
import pglib  # noqa: E402
from run import (  # noqa: E402
    ENGINE_CLI,
    cleanup,
    first_dispatch,
    fmt,
    machine_facts,
    median,
    ratio,
    run_cmd,
    work_phase,
)
from serverlib import (  # noqa: E402
    ServerProcess,
    poll,
    submit_burst,
)
from test_takeover import APP, TOKEN, counted, step_nodes  # noqa: E402

PARTS = ("fanout", "takeover", "burst")
FANOUT = f"{HERE / 'apps' / 'fanout.py'}:fanout"
STORES = ("sqlite", "postgresql")
FINAL = ("succeeded", "failed", "cancelled")
DEFAULT_TTL = 10.0  # engine.scheduler.leases.DEFAULT_TTL
# A take-over's runs: `steps` with N_STEPS sequential steps of STEP_S seconds, as in the tests.
N_RUNS, N_STEPS, STEP_S = 4, 8, 0.4
CHECKPOINTED = 2  # steps every run has finished before the kill
# The environment the engine reads; the benchmark chooses these itself.
ENGINE_VARS = ("ENGINE_STORE", "ENGINE_LEASE_TTL", "ENGINE_SERVER", "ENGINE_TOKEN", "ENGINE_BACKEND",
               "ENGINE_STATE_DIR")
# The temporary directory of every engine process this starts (TMPDIR): what they leave there is
# counted (`left_in_tmpdir`), then removed.
TMPDIR: list[Path] = []


def log(text: str) -> None:
    print(f"control-plane: {text}", file=sys.stderr, flush=True)


def engine_env() -> dict[str, str]:
    """The environment of the engine processes: this one's (without ENGINE_VARS, removed at
    start) with TMPDIR set to the benchmark's own temporary directory."""
    return {**os.environ, "TMPDIR": str(TMPDIR[0])} if TMPDIR else dict(os.environ)


def left_in_tmpdir() -> dict[str, int]:
    """What engine processes left in their temporary directory, by name prefix; then removed."""
    if not TMPDIR:
        return {}
    found: Counter[str] = Counter()
    for entry in TMPDIR[0].iterdir():
        found["-".join(entry.name.split("-")[:2]) + "-*"] += 1  # engine-code-DIGEST-RANDOM: engine-code-*
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    return dict(found)


def span(values: list[Any], digits: int = 1) -> str:
    """`median (min–max)` of the values."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    m = statistics.median(values)
    return f"{m:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


# --- fan-out: SQLite against PostgreSQL ---------------------------------------------------


@contextlib.contextmanager
def engine_store(url: str | None) -> Any:
    """`ENGINE_STORE` set to `url` for the while (run.py's `first_dispatch` opens the store that
    `engine.store.store_url` chooses, which reads it); unset otherwise."""
    saved = os.environ.pop("ENGINE_STORE", None)
    if url:
        os.environ["ENGINE_STORE"] = url
    try:
        yield
    finally:
        os.environ.pop("ENGINE_STORE", None)
        if saved is not None:
            os.environ["ENGINE_STORE"] = saved


def fanout_once(n: int, store: str, pg: pglib.PostgresServer | None, timeout: float) -> dict[str, Any]:
    """One `engine run` of the fan-out in a fresh state directory (and, on PostgreSQL, a fresh
    database): its wall time, its stored duration and its `work` span."""
    state_dir = Path(tempfile.mkdtemp(prefix="engine-bench-cp-"))
    database = url = None
    if store == "postgresql":
        assert pg is not None
        database = f"fanout_{n}_{secrets.token_hex(4)}"
        url = pg.create_database(database)
    store_args = ["--store", url] if url else []
    cmd = [*ENGINE_CLI, "run", FANOUT, "--input", str(n), "--json", "--backend", "process",
           "--state-dir", str(state_dir), *store_args]
    try:
        load = os.getloadavg()[0]
        proc, wall = run_cmd(cmd, timeout, env=engine_env(), engine=True)
        if proc.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        outcome = json.loads(proc.stdout.strip().splitlines()[-1])
        show = subprocess.run([*ENGINE_CLI, "show", outcome["run_id"], "--json", "--state-dir", str(state_dir),
                               *store_args], cwd=REPO, env=engine_env(), capture_output=True, text=True,
                              timeout=120, check=True)
        info = json.loads(show.stdout)
        with engine_store(url):
            split = first_dispatch(state_dir, outcome["run_id"])
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
        if pg is not None and database is not None:
            pg.drop_database(database)
    row = {"store": store, "wall_s": wall, "duration_s": info["duration"], "status": info["status"],
           "result": outcome["result"], "ok": info["status"] == "succeeded" and outcome["result"] == n * (n - 1),
           "calls": info["calls"]["total"], "executions": info["calls"]["executions"],
           "run_id": outcome["run_id"], "loadavg_1m_before": load, "loadavg_1m": os.getloadavg()[0], **split}
    row["work_phase_s"] = work_phase(row)
    return row


def part_fanout(args: argparse.Namespace, results: dict[str, Any]) -> None:
    pg = pglib.PostgresServer(Path(tempfile.mkdtemp(prefix="engine-pg-bench-")))
    _PG.append(pg)
    pg.start()
    results["settings"]["fanout_postgresql"] = {"url": pg.url, "timings": dict(pg.timings)}
    log(f"PostgreSQL up in {sum(pg.timings.values()):.1f} s ({pg.url})")
    try:
        for n in args.sizes:
            rows: dict[str, list[dict[str, Any]]] = {s: [] for s in STORES}
            for i in range(args.repeats):
                order = STORES if i % 2 == 0 else tuple(reversed(STORES))
                for store in order:
                    row = fanout_once(n, store, pg if store == "postgresql" else None, args.timeout)
                    rows[store].append(row)
                    log(f"fan-out {n} #{i + 1} {store}: {row['duration_s']:.2f} s in-run, {row['wall_s']:.2f} s "
                        f"wall, work span {fmt(row['work_phase_s'])} s ({row['status']})")
            entry: dict[str, Any] = {"n": n, "calls": n + 2}
            for store in STORES:
                rs = rows[store]
                entry[store] = {
                    "duration_s": [r["duration_s"] for r in rs], "wall_s": [r["wall_s"] for r in rs],
                    "work_phase_s": [r["work_phase_s"] for r in rs],
                    "median_duration_s": median([r["duration_s"] for r in rs]),
                    "median_wall_s": median([r["wall_s"] for r in rs]),
                    "median_work_phase_s": median([r["work_phase_s"] for r in rs]),
                    "all_ok": all(r["ok"] for r in rs), "runs": rs,
                }
            s, p = entry["sqlite"], entry["postgresql"]
            entry["postgresql_over_sqlite"] = {
                "duration": ratio(p["median_duration_s"], s["median_duration_s"]),
                "wall": ratio(p["median_wall_s"], s["median_wall_s"]),
                "work_phase": ratio(p["median_work_phase_s"], s["median_work_phase_s"]),
                # Per repeat (the two runs of a repeat ran one after the other).
                "duration_per_repeat": [ratio(a["duration_s"], b["duration_s"])
                                        for a, b in zip(p["runs"], s["runs"], strict=True)],
            }
            results["fanout"].append(entry)
    finally:
        pg.stop()


# --- two servers on one PostgreSQL store --------------------------------------------------


@dataclass
class Pair:
    """Two servers, one in each host, on one database of the hosts' PostgreSQL server."""

    name: str
    url: str
    servers: list[ServerProcess]
    ttl: float | None  # ENGINE_LEASE_TTL; None: unset (the default)

    @property
    def lease_s(self) -> float:
        return self.ttl if self.ttl is not None else DEFAULT_TTL


def owner_of(server: ServerProcess) -> str:
    return server.ok("GET", "/healthz")["owner"]  # type: ignore[no-any-return]


def start_pair(hosts: hostlib.Hosts, pg: pglib.PostgresServer, work: Path, name: str,
               ttl: float | None) -> Pair:
    url = pg.create_database(name)
    env = engine_env()
    if ttl is not None:
        env["ENGINE_LEASE_TTL"] = f"{ttl:g}"
    servers = [ServerProcess(work / f"{name}-{h.name}", host=h, store=url, token=TOKEN, env=env,
                             log_path=work / f"{name}-{h.name}.log") for h in hosts]
    pair = Pair(name, url, servers, ttl)
    _PAIRS.append(pair)
    started = time.monotonic()
    for server in servers:
        server.state_dir.mkdir()
        server.start(timeout=60)
    servers[0].deploy(APP)
    log(f"{name}: two servers up and {APP.name} deployed in {time.monotonic() - started:.1f} s "
        f"(lease {pair.lease_s:g} s)")
    return pair


def stop_pair(pair: Pair) -> None:
    for server in pair.servers:
        with contextlib.suppress(Exception):
            server.stop()


def lease_left(url: str, run_ids: list[str]) -> dict[str, float]:
    """Seconds each run's lease has left, by the database's clock (the store's own rule)."""
    import psycopg

    with psycopg.connect(url, connect_timeout=5) as conn:
        rows = conn.execute("SELECT run_id, lease_expires - EXTRACT(EPOCH FROM clock_timestamp())::double precision "
                            "FROM runs WHERE run_id = ANY(%s)", (run_ids,)).fetchall()
    return {r: float(v) for r, v in rows if v is not None}


def takeover_once(pair: Pair, k: int, steps_log: Path) -> dict[str, Any]:
    submit_to = pair.servers[k % 2]
    ids = {owner_of(s): s for s in pair.servers}
    runs = {submit_to.submit("steps", {"log": str(steps_log), "tag": f"{pair.name}-{k}-r{i}", "n": N_STEPS,
                                       "seconds": STEP_S}): f"{pair.name}-{k}-r{i}" for i in range(N_RUNS)}
    submitted = time.monotonic()

    def checkpointed() -> bool:
        return all(sum(c["status"] == "succeeded" for c in step_nodes(submit_to, r).values()) >= CHECKPOINTED
                   for r in runs)

    poll(checkpointed, 120, interval=0.1, what=f"every run to checkpoint {CHECKPOINTED} steps")
    held = {r: submit_to.ok("GET", f"/v1/runs/{r}")["owner"] for r in runs}
    driving = Counter(o for o in held.values() if o in ids)
    victim_id = max(driving, key=lambda o: driving[o])
    victim = ids[victim_id]
    survivor = next(s for s in pair.servers if s is not victim)
    survivor_id = next(o for o, s in ids.items() if s is survivor)
    victims_runs = [r for r in runs if held[r] == victim_id]

    victim.kill9()
    killed_at = time.monotonic()
    killed_wall = time.time()  # the store's timestamps are this machine's clock
    # No renewal can come any more: what each lease had left, as of the kill.
    left = lease_left(pair.url, victims_runs)
    asked = time.monotonic() - killed_at
    left_at_kill = {r: v + asked for r, v in left.items()}
    finished = {r: {cid for cid, c in step_nodes(survivor, r).items() if c["status"] == "succeeded"} for r in runs}
    running = {r: sum(c["status"] == "running" for c in step_nodes(survivor, r).values()) for r in victims_runs}

    owned_at: dict[str, float] = {}
    done_at: dict[str, float] = {}
    final: dict[str, dict[str, Any]] = {}

    def watch() -> bool:
        for r in runs:
            if r in done_at:
                continue
            info = survivor.ok("GET", f"/v1/runs/{r}")
            t = time.monotonic() - killed_at
            if r in victims_runs and r not in owned_at and (info["owner"] == survivor_id or info["status"] in FINAL):
                owned_at[r] = t
            if info["status"] in FINAL:
                done_at[r] = t
                final[r] = info
        return len(done_at) == len(runs)

    timed_out = None
    try:
        poll(watch, pair.lease_s * 4 + 120, interval=0.05, what="the killed server's runs to be taken over and finish")
    except AssertionError as error:
        timed_out = str(error)

    starts = counted(steps_log, "start")
    again = 0
    executions: dict[str, dict[str, int]] = {}
    # Where a taken-over run's time went, from the kill (the DAG's timestamps): the orchestrator
    # (`steps`) dispatched again on the survivor, its first step that had not finished at the
    # kill dispatched, its last step ended.
    after: dict[str, dict[str, float | None]] = {}
    for r in runs:
        nodes = step_nodes(survivor, r)
        executions[r] = {cid: n["executions"] for cid, n in nodes.items()}
        again += sum(1 for cid in finished[r] if nodes.get(cid, {}).get("executions", 1) > 1)
        if r in victims_runs:
            dag = survivor.ok("GET", f"/v1/runs/{r}/dag")["nodes"]
            root = next((n for n in dag if n["function"] == "steps"), {})
            rest = [n for cid, n in nodes.items() if cid not in finished[r]]
            after[r] = {
                "root_dispatched_s": root["start"] - killed_wall if root.get("start") else None,
                "first_remaining_step_s": min((n["start"] for n in rest if n["start"]), default=killed_wall)
                - killed_wall if rest else None,
                "last_step_end_s": max((n["end"] for n in nodes.values() if n["end"]), default=killed_wall)
                - killed_wall,
            }
    rerun = {tag: sum(starts[(tag, i)] for i in range(N_STEPS)) - N_STEPS for tag in runs.values()}
    took = max(owned_at.values()) if len(owned_at) == len(victims_runs) and victims_runs else None
    since_renewal = [owned_at[r] + pair.lease_s - left_at_kill[r] for r in victims_runs
                     if r in owned_at and r in left_at_kill]
    row = {
        "submitted_to": submit_to.url, "killed": victim.url, "survivor": survivor.url,
        "runs": list(runs), "victims_runs": victims_runs,
        "kill_after_submit_s": killed_at - submitted,
        "lease_left_at_kill_s": left_at_kill,
        "steps_finished_at_kill": {r: len(v) for r, v in finished.items()},
        "steps_running_at_kill": running,
        "owned_by_survivor_s": owned_at,
        "succeeded_s": done_at,
        "after_kill_s": after,
        # From the kill until the survivor owned every one of the killed server's runs.
        "takeover_s": took,
        # From each run's last renewal (TTL minus what its lease had left at the kill) to its take-over.
        "since_last_renewal_s": max(since_renewal) if since_renewal else None,
        "after_expiry_s": max((owned_at[r] - left_at_kill[r] for r in victims_runs
                               if r in owned_at and r in left_at_kill), default=None),
        "victims_succeeded_s": max((done_at[r] for r in victims_runs if r in done_at), default=None)
        if all(r in done_at for r in victims_runs) else None,
        "all_succeeded_s": max(done_at.values()) if len(done_at) == len(runs) else None,
        "statuses": {r: final[r]["status"] if r in final else None for r in runs},
        "wrong_results": sum(1 for r in runs if r in final and final[r].get("result") != sum(range(N_STEPS))),
        "resumes": {r: final[r].get("resumes") for r in final},
        "finished_steps_executed_again": again,
        "in_flight_steps_run_again": sum(rerun.values()),
        "step_executions": executions,
        "timed_out": timed_out,
        "loadavg_1m": os.getloadavg()[0],
    }
    # The killed server back, for the next take-over (its executors reaped first).
    victim.stop()
    started = time.monotonic()
    victim.start(timeout=60)
    row["restart_s"] = time.monotonic() - started
    return row


def part_takeover(args: argparse.Namespace, hosts: hostlib.Hosts, pg: pglib.PostgresServer, work: Path,
                  results: dict[str, Any]) -> None:
    for ttl in args.lease_ttls:
        label = "default" if ttl is None else f"{ttl:g}"
        pair = start_pair(hosts, pg, work, f"takeover_{label}", ttl)
        steps_log = work / f"steps-{label}.log"
        rows = []
        try:
            for k in range(args.takeovers):
                row = takeover_once(pair, k, steps_log)
                rows.append(row)
                log(f"take-over {k + 1}/{args.takeovers} (lease {pair.lease_s:g} s): "
                    f"{len(row['victims_runs'])} run(s) owned by the survivor {fmt(row['takeover_s'])} s after "
                    f"the kill ({fmt(row['since_last_renewal_s'])} s after the last renewal), succeeded after "
                    f"{fmt(row['victims_succeeded_s'])} s; finished steps run again: "
                    f"{row['finished_steps_executed_again']}, in-flight steps run again: "
                    f"{row['in_flight_steps_run_again']}" + (f"; {row['timed_out']}" if row["timed_out"] else ""))
        finally:
            stop_pair(pair)
        lease = pair.lease_s

        def values(key: str, rows: list[dict[str, Any]] = rows) -> list[Any]:
            return [r[key] for r in rows]

        results["takeover"].append({
            "ENGINE_LEASE_TTL": None if ttl is None else f"{ttl:g}", "lease_s": lease,
            "renew_and_scan_every_s": lease / 5,
            "bound_since_last_renewal_s": lease + lease / 5,
            "takeovers": len(rows), "runs_taken_over": sum(len(r["victims_runs"]) for r in rows),
            **{f"{stat}_{key}": (fn(v) if (v := [x for x in values(key) if x is not None]) else None)
               for key in ("takeover_s", "since_last_renewal_s", "after_expiry_s", "victims_succeeded_s")
               for stat, fn in (("median", statistics.median), ("min", min), ("max", max))},
            "median_lease_left_at_kill_s": median([v for r in rows for v in r["lease_left_at_kill_s"].values()]),
            # Per taken-over run, from the survivor owning it: its orchestrator dispatched again, its
            # first unfinished step dispatched; and from there to its end.
            **{f"median_{key.removesuffix('_s')}_after_owned_s": median([
                ph[key] - r["owned_by_survivor_s"][run] for r in rows for run, ph in r["after_kill_s"].items()
                if ph[key] is not None and run in r["owned_by_survivor_s"]])
               for key in ("root_dispatched_s", "first_remaining_step_s")},
            "median_first_remaining_step_to_succeeded_s": median([
                r["succeeded_s"][run] - ph["first_remaining_step_s"] for r in rows
                for run, ph in r["after_kill_s"].items()
                if ph["first_remaining_step_s"] is not None and run in r["succeeded_s"]]),
            "finished_steps_executed_again": sum(values("finished_steps_executed_again")),
            "in_flight_steps_run_again": sum(values("in_flight_steps_run_again")),
            "steps_running_at_kill": sum(sum(r["steps_running_at_kill"].values()) for r in rows),
            "not_succeeded": sum(1 for r in rows for s in r["statuses"].values() if s != "succeeded"),
            "wrong_results": sum(values("wrong_results")),
            "timed_out": sum(1 for r in rows if r["timed_out"]),
            "rows": rows,
        })


def part_burst(args: argparse.Namespace, hosts: hostlib.Hosts, pg: pglib.PostgresServer, work: Path,
               results: dict[str, Any]) -> None:
    pair = start_pair(hosts, pg, work, "burst", None)
    a, b = pair.servers
    n = args.burst
    answered_before_kill: set[int] = set()
    state: dict[str, Any] = {"killed": False}

    def on_accept(i: int) -> None:
        if not state["killed"]:
            answered_before_kill.add(i)

    async def scenario() -> dict[int, tuple[int, dict[str, Any]]]:
        deadline = time.monotonic() + 180
        burst = asyncio.ensure_future(submit_burst([a, b], n, on_accept, deadline))
        while len(answered_before_kill) < n // 3 and not burst.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        if not burst.done():
            state["answered_at_kill"] = len(answered_before_kill)
            a.kill9()
            state["killed_at"] = time.monotonic()
        state["killed"] = True
        return await burst

    out: dict[str, Any] = {"submissions": n, "killed": a.url, "survivor": b.url, "lease_s": pair.lease_s}
    try:
        began = time.monotonic()
        try:
            answers = asyncio.run(scenario())
        except AssertionError as error:  # a submission that never got an answer before the deadline
            answers = {}
            out["error"] = str(error)
        submitted = time.monotonic()
        # Answered when the SIGKILL was sent, and by the time kill9() had reaped the server.
        out["answered_at_kill"] = state.get("answered_at_kill")
        out["answered_before_kill"] = len(answered_before_kill)
        out["kill_after_first_post_s"] = state["killed_at"] - began if "killed_at" in state else None
        out["submitting_s"] = submitted - began
        statuses = Counter(status for status, _ in answers.values())
        ids = {i: body["run_id"] for i, (status, body) in answers.items() if status == 202}
        out["answers"] = {str(k): v for k, v in sorted(statuses.items())}
        out["accepted"] = statuses.get(202, 0)
        out["refused"] = sum(v for k, v in statuses.items() if k != 202)
        out["unanswered"] = n - len(answers)
        out["replayed"] = sum(1 for status, body in answers.values() if status == 202 and body.get("replayed"))
        out["distinct_runs"] = len(set(ids.values()))
        out["duplicates"] = n - out["distinct_runs"]
        seen: dict[str, Any] = {}

        def all_finished() -> bool:
            listed = b.ok("GET", f"/v1/runs?application=inc&limit={max(1000, 2 * n)}")
            seen["listed"] = listed
            return listed["total"] >= out["distinct_runs"] and all(r["status"] in FINAL for r in listed["runs"])

        try:
            poll(all_finished, 300, interval=0.25, what="every run of the burst to finish on the survivor")
            finished = time.monotonic()
            out["finished_after_first_post_s"] = finished - began
            out["finished_after_kill_s"] = finished - state["killed_at"] if "killed_at" in state else None
        except AssertionError as error:
            out["finish_error"] = str(error)
        listed = {r["run_id"]: r for r in seen.get("listed", {}).get("runs", [])}
        out["runs_in_store"] = seen.get("listed", {}).get("total")
        out["runs_nobody_was_told_of"] = len(set(listed) - set(ids.values()))
        out["accepted_runs_missing"] = len(set(ids.values()) - set(listed))
        out["statuses"] = dict(Counter(r["status"] for r in listed.values()))
        out["succeeded"] = out["statuses"].get("succeeded", 0)
        out["failed"] = out["statuses"].get("failed", 0)
        out["resumed_runs"] = sum(1 for r in listed.values() if r.get("resumes"))
        wrong = 0
        for i, run_id in ids.items():
            if listed.get(run_id, {}).get("status") == "succeeded" and b.ok("GET", f"/v1/runs/{run_id}")["result"] != i + 1:
                wrong += 1
        out["wrong_results"] = wrong
        out["loadavg_1m"] = os.getloadavg()[0]
    finally:
        stop_pair(pair)
    results["burst"] = out
    log(f"burst: {out.get('accepted')} accepted, {out.get('refused')} refused, {out.get('distinct_runs')} distinct "
        f"runs, {out.get('succeeded')} succeeded, {out.get('failed')} failed, all finished "
        f"{fmt(out.get('finished_after_first_post_s'))} s after the first POST "
        f"({fmt(out.get('finished_after_kill_s'))} s after the kill)")


# --- report ------------------------------------------------------------------------------


def markdown(results: dict[str, Any]) -> str:
    out: list[str] = []
    repeats = results["settings"]["repeats"]
    if results["fanout"]:
        out += [f"Fan-out on the process backend, SQLite against PostgreSQL (medians of {repeats}):", "",
                "| fan-out | SQLite in-run s | PostgreSQL in-run s | PostgreSQL ÷ SQLite | SQLite end to end s "
                "| PostgreSQL end to end s | PostgreSQL ÷ SQLite | `work` calls alone, SQLite · PostgreSQL s |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for e in results["fanout"]:
            s, p, x = e["sqlite"], e["postgresql"], e["postgresql_over_sqlite"]
            out.append(f"| N = {e['n']:,} ({e['calls']:,} calls) | {fmt(s['median_duration_s'])} "
                       f"| {fmt(p['median_duration_s'])} | {_x(x['duration'])} {_range(e, 'duration_s')} "
                       f"| {fmt(s['median_wall_s'])} | {fmt(p['median_wall_s'])} | {_x(x['wall'])} {_range(e, 'wall_s')} "
                       f"| {fmt(s['median_work_phase_s'])} · {fmt(p['median_work_phase_s'])} |")
        out += ["", "(The ratio of the medians; in brackets the lowest and highest ratio of the two runs of one "
                "repeat, which ran one after the other under the same load.)", ""]
    if results["takeover"]:
        out += [f"Take-over after `kill -9`: two servers on one PostgreSQL store, {N_RUNS} runs of {N_STEPS} "
                f"× {STEP_S:g} s steps each time, the killed server's runs measured (median (min–max)):", "",
                "| lease | take-overs (runs) | kill → survivor owns them, s | last renewal → owned, s "
                "| bound: TTL + TTL/5 | kill → they succeeded, s | finished steps run again | in-flight steps run again |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for t in results["takeover"]:
            rows = t["rows"]
            label = f"{t['lease_s']:g} s" + (" (default)" if t["ENGINE_LEASE_TTL"] is None else "")
            out.append(f"| {label} | {t['takeovers']} ({t['runs_taken_over']}) "
                       f"| {span([r['takeover_s'] for r in rows])} | {span([r['since_last_renewal_s'] for r in rows])} "
                       f"| {t['bound_since_last_renewal_s']:.1f} | {span([r['victims_succeeded_s'] for r in rows])} "
                       f"| {t['finished_steps_executed_again']} | {t['in_flight_steps_run_again']} |")
        out.append("")
    b = results.get("burst")
    if b:
        out += [f"Burst: {b['submissions']} concurrent submissions with Idempotency-Keys across two servers, "
                "one killed once a third were answered:", "",
                "| accepted (202) | refused | replayed | distinct runs | duplicates | succeeded | failed "
                "| all finished, s after the first POST | … after the kill |",
                "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
                f"| {b.get('accepted')} | {b.get('refused')} | {b.get('replayed')} | {b.get('distinct_runs')} "
                f"| {b.get('duplicates')} | {b.get('succeeded')} | {b.get('failed')} "
                f"| {fmt(b.get('finished_after_first_post_s'))} | {fmt(b.get('finished_after_kill_s'))} |", ""]
    return "\n".join(out).rstrip() + "\n"


def _x(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _range(entry: dict[str, Any], key: str) -> str:
    """`(low–high×)`: PostgreSQL ÷ SQLite of each repeat's pair of runs."""
    pairs = zip(entry["postgresql"]["runs"], entry["sqlite"]["runs"], strict=False)
    values = [r for p, s in pairs if (r := ratio(p[key], s[key])) is not None]
    return f"({min(values):.2f}–{max(values):.2f}×)" if values else ""


# --- main --------------------------------------------------------------------------------

# What this run started, stopped in `finally` whatever happens.
_PG: list[pglib.PostgresServer] = []
_PAIRS: list[Pair] = []


def parse_ttls(text: str) -> list[float | None]:
    return [None if t.strip() == "default" else float(t) for t in text.split(",") if t.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"a subset of {','.join(PARTS)}")
    parser.add_argument("--repeats", type=int, default=3, help="fan-out repeats per size and store (default 3)")
    parser.add_argument("--sizes", default="10000,1000", help="fan-out sizes (default 10000,1000)")
    parser.add_argument("--takeovers", type=int, default=5, help="kill -9 take-overs per lease (default 5)")
    parser.add_argument("--lease-ttls", default="default,3",
                        help="ENGINE_LEASE_TTL values for the take-overs; `default` leaves it unset (10 s)")
    parser.add_argument("--burst", type=int, default=500, help="submissions in the burst (default 500)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed for one engine run")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "control_plane.json")
    args = parser.parse_args()
    parts = [p for p in (x.strip() for x in args.parts.split(",")) if p]
    if set(parts) - set(PARTS):
        parser.error(f"unknown part(s) {', '.join(sorted(set(parts) - set(PARTS)))}: choose from {', '.join(PARTS)}")
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.lease_ttls = parse_ttls(args.lease_ttls)
    reason = pglib.missing() or (hostlib.missing() if set(parts) & {"takeover", "burst"} else None)
    if reason:
        parser.error(reason)
    inherited = {k: os.environ.pop(k) for k in ENGINE_VARS if k in os.environ}  # the benchmark sets these

    began = time.monotonic()
    results: dict[str, Any] = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": machine_facts(),
        "settings": {
            "parts": parts, "repeats": args.repeats, "sizes": args.sizes, "takeovers": args.takeovers,
            "lease_ttls": ["default" if t is None else t for t in args.lease_ttls], "burst": args.burst,
            "backend": "process", "fanout_app": "benchmarks/apps/fanout.py:fanout",
            "takeover_app": str(APP.relative_to(REPO)),
            "takeover_runs": {"runs": N_RUNS, "steps": N_STEPS, "step_s": STEP_S, "checkpointed_before_kill": CHECKPOINTED},
            "postgresql": pglib.SETTINGS, "inherited_engine_env_removed": sorted(inherited),
        },
        "fanout": [], "takeover": [], "burst": None,
    }
    results["machine"]["postgresql"] = subprocess.run([str(pglib.PG_BIN / "postgres"), "--version"],
                                                      capture_output=True, text=True).stdout.strip()
    import psycopg

    results["machine"]["psycopg"] = psycopg.__version__
    work = Path(tempfile.mkdtemp(prefix="engine-bench-cp-work-"))
    TMPDIR.append(work / "tmp")
    TMPDIR[0].mkdir()
    results["left_in_tmpdir"] = {}
    interrupted = signal.getsignal(signal.SIGTERM)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(143))  # so that every `finally` below tears down
    hosts: hostlib.Hosts | None = None
    failed = True
    try:
        if "fanout" in parts:
            part_fanout(args, results)
            results["left_in_tmpdir"]["fanout"] = left_in_tmpdir()
        if set(parts) & {"takeover", "burst"}:
            hosts = hostlib.Hosts(2)
            hosts.up()
            pg = hosts.postgres().start()
            log(f"two hosts and PostgreSQL on their bridge up ({pg.url})")
            if "takeover" in parts:
                part_takeover(args, hosts, pg, work, results)
                results["left_in_tmpdir"]["takeover"] = left_in_tmpdir()
            if "burst" in parts:
                part_burst(args, hosts, pg, work, results)
                results["left_in_tmpdir"]["burst"] = left_in_tmpdir()
        failed = False
    finally:
        for pair in _PAIRS:
            stop_pair(pair)
        for server in _PG:
            with contextlib.suppress(Exception):
                server.stop()
        cleanup()  # run.py's: engine processes still running
        if hosts is not None:
            hosts.down()
            results["leftovers"] = hosts.leftovers()
        signal.signal(signal.SIGTERM, interrupted)
        left = left_in_tmpdir()  # a part that did not finish left these
        if left:
            results["left_in_tmpdir"]["at_exit"] = left
        if failed:
            log(f"stopped before the end; the servers' logs (if any) are kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    for part, left in results["left_in_tmpdir"].items():
        if left:
            log(f"{part}: the engine's processes left in their TMPDIR (now removed): {left}")
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    results["elapsed_s"] = time.monotonic() - began
    results["markdown"] = markdown(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(results["markdown"])
    if results.get("leftovers"):
        log(f"left behind: {results['leftovers']}")
    log(f"wrote {args.out} in {results['elapsed_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
