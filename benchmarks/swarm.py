"""Benchmark the swarm backend on the three-host test Swarm, beside the docker backend on one host
and a Ray cluster on the same three hosts, in one run. Reports numbers; asserts nothing.

    python benchmarks/swarm.py [--parts fanout,chain,large,death,ray] [--sizes 1000] [--repeats 3]
                               [--chain 200] [--large-mb 64] [--kills 3] [--ray-power-offs 1]
                               [--out results/swarm.json]

Needs root: it builds the cluster of `tests/integration/swarmlib.py` (three Docker engines in
network namespaces of this machine, a registry on their bridge) and removes it afterwards, with
everything else it started. Medians go in a Markdown table (printed, and in the JSON under
`markdown`); every raw number, the machine's facts and the load average beside each part go in
`benchmarks/results/swarm.json`.

The engine runs in three set-ups, each repeat one `engine run ... --json` as a user runs it:
`docker` (this machine's own engine, one host), `swarm/published` (the engine in this machine's
namespace dials each executor at its node's address and a published port) and `swarm/attached`
(the engine in the network namespace of a container on the overlay network, dialling executors
at their overlay addresses; docs/swarm.md).

- `fanout`: `benchmarks/apps/fanout.py:fanout N` (N + 2 calls; `work` in at most 2 executors of
  concurrency 16). The run's own duration (from the store; executor start-ups included) and the
  wall time of the `engine run` process.
- `chain`: `benchmarks/apps/chain.py:hop K`, per hop from the store: (last hop's dispatch -
  second hop's dispatch) / (K - 1), the warm latency of one hop (a result back, checkpointed,
  the next call dispatched) without the first executor's start-up. (`run.py` subtracts a 1-hop
  run instead; a Swarm executor's start-up varies by more than the 200 hops take.)
- `large`: `benchmarks/apps/large.py:pass_on MB`, one MB-MiB value from `make` to `measure`
  (on the Swarm placed on two different workers, esw2 and esw3) and `pass_on 0` for the fixed
  cost; MiB/s = MB / (duration(MB) - duration(0)). The value crosses the scheduler's Blobs
  service both ways and is fsynced there once.
- `death`: `tests/integration/swarm_apps/cluster.py:fanout`, twelve 6-second calls on six
  executors; during the second wave a worker host dies, `--kills` times each way: *powered off*
  (its link down, then every process of it SIGKILLed: nothing it sends while dying gets out)
  and *crashed* (the same SIGKILLs, link up: its kernel resets the connections). *Noticed*:
  from the kill to the first call failed as lost; *elsewhere*: to the last of its calls running
  again on another host. The host is revived between repeats.
- `ray`: the same workloads on a Ray cluster of three nodes, one in each host's network
  namespace (head on esw1, 2 CPUs per node), driven from esw1 (`ray_cluster.py`, peers venv):
  the N fan-out with `work` spread over the nodes (`workload_s` right after `ray.init`, and
  warm), K sequential round trips, and the node death — twelve 6-second tasks on the six CPUs,
  a node's Ray processes killed the same two ways during the second wave, Ray's default retries
  (`--kills` crashes, `--ray-power-offs` power-offs: one takes Ray about 7 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import swarmlib  # noqa: E402
from run import PEERS_PYTHON, ensure_peers, fmt, machine_facts, ratio  # noqa: E402

PARTS = ("fanout", "chain", "large", "death", "ray")
FANOUT = HERE / "apps" / "fanout.py"
CHAIN = HERE / "apps" / "chain.py"
LARGE = HERE / "apps" / "large.py"
SWARM_APPS = REPO / "tests" / "integration" / "swarm_apps"
DEATH_CALLS, DEATH_SECONDS = 12, 6.0  # two waves on six executors (or six Ray CPUs)
KILLED = "esw3"
SETUPS = ("docker/local", "swarm/published", "swarm/attached")


def log(text: str) -> None:
    print(f"swarm-bench: {text}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float | None:
    values = [v for v in values if v == v]  # NaN: not measured
    return statistics.median(values) if values else None


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
        starts = sorted(c.started_at for c in swarmlib.calls_of(state) if c.kind == "call" and c.started_at)
        return {"wall_s": wall, "duration_s": info["duration"], "calls": info["calls"]["total"],
                "starts": starts, "loadavg_1m": os.getloadavg()[0]}
    finally:
        shutil.rmtree(state, ignore_errors=True)


def wait_until(predicate: Any, timeout: float, what: str, proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
            raise SystemExit(f"node death: {what} never happened")
        time.sleep(0.1)


# --- the engine ------------------------------------------------------------------------------


def node_death(cluster: swarmlib.Cluster, gateway: str, env: dict[str, str], power_off: bool) -> dict[str, float]:
    """One kill of KILLED during a run (see the module docstring); revives it afterwards."""
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
                             "--input", json.dumps({"n": DEATH_CALLS, "seconds": DEATH_SECONDS}), "--json",
                             "--config", str(config), "--state-dir", str(state)], cwd=SWARM_APPS, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def on_killed_host() -> bool:
        for service in manager.api.services(filters={"label": ["engine.managed=1", "engine.function=where"]}):
            for task in manager.api.tasks(filters={"service": service["ID"], "desired-state": "running"}):
                if task["Status"]["State"] == "running" and names.get(task["NodeID"]) == KILLED:
                    return True
        return False

    try:
        wait_until(lambda: on_killed_host() and sum(
            1 for c in swarmlib.calls_of(state) if c.function == "where" and c.status == "succeeded") >= DEATH_CALLS // 2,
            120, f"the second wave on {KILLED}", proc)
        killed = cluster.kill_host(KILLED, power_off=power_off)
        noticed = None
        while proc.poll() is None:
            if noticed is None and any(c.error_kind for c in swarmlib.calls_of(state) if c.function == "where"):
                noticed = time.time() - killed
            time.sleep(0.05)
        _out, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"node death: the run failed:\n{err[-3000:]}")
        retried = [c for c in swarmlib.calls_of(state) if c.function == "where" and c.executions > 1]
        elsewhere = max(c.started_at for c in retried) - killed if retried else float("nan")
        return {"noticed_s": noticed if noticed is not None else float("nan"), "elsewhere_s": elsewhere,
                "retried": len(retried), "loadavg_1m": os.getloadavg()[0]}
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(state, ignore_errors=True)
        cluster.revive_host(KILLED)


def engine_parts(args: argparse.Namespace, parts: set[str], cluster: swarmlib.Cluster, gateway: str,
                 results: dict[str, Any]) -> None:
    base = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "ENGINE_BACKEND")}
    swarm_env = {**base, "DOCKER_HOST": cluster.manager.docker_host, "ENGINE_SWARM_REGISTRY": swarmlib.REGISTRY}
    placement = Path(tempfile.mkdtemp(prefix="swarm-bench-")) / "engine.yaml"
    placement.write_text("functions:\n  make: {constraints: ['node.hostname==esw2']}\n"
                         "  measure: {constraints: ['node.hostname==esw3']}\n")
    for key in SETUPS:
        if key == "docker/local" and args.no_docker:
            continue
        backend, mode = key.split("/")
        env = base if backend == "docker" else swarm_env
        if "fanout" in parts:
            for n in args.sizes:
                rows = [one_run(f"{FANOUT}:fanout", n, backend, mode, gateway, env) for _ in range(args.repeats)]
                for row in rows:
                    row.pop("starts")
                results["fanout"].setdefault(key, {})[str(n)] = rows
                log(f"{key} fan-out {n}: median {median([r['duration_s'] for r in rows]):.2f} s "
                    f"(wall {median([r['wall_s'] for r in rows]):.2f} s)")
        if "chain" in parts:
            hops = []
            for _ in range(args.repeats):
                starts = one_run(f"{CHAIN}:hop", args.chain, backend, mode, gateway, env)["starts"]
                hops.append(1000 * (starts[-1] - starts[1]) / (len(starts) - 2))
            results["per_hop_ms"][key] = hops
            log(f"{key} per hop: median {median(hops):.2f} ms")
        if "large" in parts and args.large_mb:
            rows = []
            for _ in range(args.repeats):
                runs = [one_run(f"{LARGE}:pass_on", mb, backend, mode, gateway, env,
                                extra=("--config", str(placement)))["duration_s"] for mb in (0, args.large_mb)]
                rows.append({"fixed_s": runs[0], "duration_s": runs[1],
                             "mb_per_s": args.large_mb / max(runs[1] - runs[0], 1e-9)})
            results["large"][key] = {"mb": args.large_mb, "runs": rows}
            log(f"{key} {args.large_mb} MiB value: median {median([r['duration_s'] for r in rows]):.2f} s, "
                f"{median([r['mb_per_s'] for r in rows]):.0f} MiB/s")
    shutil.rmtree(placement.parent, ignore_errors=True)
    if "death" in parts:
        for power_off in (False, True):
            for _ in range(args.kills):
                row = {"power_off": power_off, **node_death(cluster, gateway, swarm_env, power_off)}
                results["node_death"]["engine"].append(row)
                log(f"engine, node {'powered off' if power_off else 'processes killed'}: noticed "
                    f"{row['noticed_s']:.1f} s, elsewhere {row['elsewhere_s']:.1f} s")


# --- Ray -------------------------------------------------------------------------------------


def _netns_inode(name: str) -> int:
    return os.stat(f"/run/netns/{name}").st_ino


def _in_netns(pid: int, inode: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/net") == f"net:[{inode}]"
    except OSError:
        return False


class RayCluster:
    """One Ray node in each test host's network namespace (they share this machine's
    filesystem, so each node gets its own temporary directory). Killed and removed by process,
    never with `ray stop`, which would stop every Ray on the machine."""

    CPUS = 2
    PORT = 6379

    def __init__(self, cluster: swarmlib.Cluster) -> None:
        self.cluster = cluster
        self.root = Path(tempfile.mkdtemp(prefix="swarm-bench-ray-"))
        self.head = cluster.manager
        self.address = f"{self.head.address}:{self.PORT}"

    def _ray(self, host: swarmlib.Host, *args: str) -> None:
        ray = str(PEERS_PYTHON.parent / "ray")
        temp = self.root / host.name
        proc = subprocess.run(["nsenter", f"--net=/run/netns/{host.netns}", ray, "start", *args,
                               "--node-ip-address", host.address, "--num-cpus", str(self.CPUS),
                               "--temp-dir", str(temp), "--disable-usage-stats"],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise SystemExit(f"ray start on {host.name} failed:\n{proc.stderr[-3000:]}")

    def start_node(self, host: swarmlib.Host) -> None:
        if host is self.head:
            self._ray(host, "--head", "--port", str(self.PORT), "--include-dashboard=false")
        else:
            self._ray(host, "--address", self.address)

    def up(self) -> RayCluster:
        for host in self.cluster.hosts:
            self.start_node(host)
        return self

    def pids(self, host: swarmlib.Host) -> set[int]:
        """Every process of `host`'s Ray node: those naming its temporary directory, and their
        descendants (the workers, whose command lines Ray rewrites to `ray::...`)."""
        inode, temp = _netns_inode(host.netns), str(self.root / host.name)
        roots = {pid for pid in swarmlib._pids()
                 if _in_netns(pid, inode) and any(temp in arg for arg in swarmlib._cmdline(pid))}
        return swarmlib._tree(roots)

    def kill_node(self, host: swarmlib.Host, power_off: bool) -> float:
        """SIGKILL to the node's processes (the host's Docker engine is left alone). Powered
        off, as `Cluster.kill_host`: its link goes down first, so that nothing it sends while
        dying gets out; otherwise its kernel closes their connections (RST) as a crash does.
        Returns when."""
        pids = self.pids(host)
        if power_off:
            subprocess.run(["ip", "link", "set", host.veth, "down"], check=True)
        when = time.time()
        swarmlib._kill_all(pids)
        return when

    def revive_node(self, host: swarmlib.Host) -> None:
        subprocess.run(["ip", "link", "set", host.veth, "up"], check=True)
        shutil.rmtree(self.root / host.name, ignore_errors=True)
        self.start_node(host)

    def driver(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(["nsenter", f"--net=/run/netns/{self.head.netns}", str(PEERS_PYTHON),
                                 str(HERE / "ray_cluster.py"), "--address", self.address, *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE)

    def drive(self, *args: str, timeout: float = 600) -> dict[str, Any]:
        started = time.perf_counter()
        proc = self.driver(*args)
        try:
            out, err = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
        if proc.returncode != 0:
            raise SystemExit(f"ray_cluster.py {' '.join(args)} exited {proc.returncode}:\n{err[-3000:]}")
        row: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        row["wall_s"] = time.perf_counter() - started
        row["loadavg_1m"] = os.getloadavg()[0]
        return row

    def down(self) -> None:
        for host in self.cluster.hosts:
            swarmlib._kill_all(self.pids(host))
            subprocess.run(["ip", "link", "set", host.veth, "up"], check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def ray_node_death(ray: RayCluster, power_off: bool) -> dict[str, float]:
    """Kill KILLED's Ray node during the second wave of DEATH_CALLS tasks; revive it after."""
    host = ray.cluster.host(KILLED)
    attempts = ray.root / "attempts.log"
    attempts.write_text("")

    def seen() -> list[tuple[int, str, float]]:
        rows = []
        for line in attempts.read_text().splitlines():
            i, node, at = line.split()
            rows.append((int(i), node, float(at)))
        return rows

    proc = ray.driver("--death", str(DEATH_CALLS), "--seconds", str(DEATH_SECONDS), "--attempts", str(attempts))

    def second_wave_on_host() -> bool:
        rows, now = seen(), time.time()
        return (len({i for i, _n, _t in rows}) > DEATH_CALLS // 2
                and any(n == host.address and now - at < DEATH_SECONDS - 1 for _i, n, at in rows))

    try:
        wait_until(second_wave_on_host, 120, f"the second wave on Ray's {KILLED}", proc)
        killed = ray.kill_node(host, power_off)
        # Lost: the tasks that were running on the host when it died (the first wave's there
        # had finished). Ray retries them; their next attempt is when they run elsewhere.
        lost = {i for i, node, at in seen() if node == host.address and killed - at < DEATH_SECONDS}
        # Powered off, Ray 2.60 took 3 to 7 minutes here: its driver re-runs a task once its own
        # connection to the task's worker gives up, and that connection's gRPC keepalive is
        # 300 s + 120 s by default.
        _out, err = proc.communicate(timeout=1200)
        if proc.returncode != 0:
            raise SystemExit(f"ray node death: the driver failed:\n{err[-3000:]}")
        again = [at - killed for i, _node, at in seen() if i in lost and at > killed]
        return {"elsewhere_s": max(again) if again else float("nan"),
                "first_again_s": min(again) if again else float("nan"),
                "retried": len(lost), "loadavg_1m": os.getloadavg()[0]}
    finally:
        if proc.poll() is None:
            proc.kill()
        ray.revive_node(host)
        wait_until(lambda: len(ray.drive()["nodes"]) == len(ray.cluster.hosts), 120, f"{KILLED} back in Ray")


def ray_parts(args: argparse.Namespace, parts: set[str], cluster: swarmlib.Cluster, results: dict[str, Any]) -> None:
    if not ensure_peers():
        results["skipped"].append("ray: the peers venv could not be set up")
        return
    ray = RayCluster(cluster)
    try:
        ray.up()
        info = ray.drive()
        results["ray"].update(version=info["ray_version"], nodes=info["nodes"], cpus_per_node=ray.CPUS)
        if "fanout" in parts:
            for n in args.sizes:
                rows = [ray.drive("--n", str(n)) for _ in range(args.repeats)]
                results["ray"]["fanout"][str(n)] = rows
                log(f"ray cluster fan-out {n}: median {median([r['workload_s'] for r in rows]):.2f} s "
                    f"(warm {median([r['workload_warm_s'] for r in rows]):.2f} s), per node {rows[-1]['per_node']}")
        if "chain" in parts:
            rows = [ray.drive("--chain", str(args.chain)) for _ in range(args.repeats)]
            results["ray"]["per_hop_ms"] = [r["chain_per_hop_ms"] for r in rows]
            log(f"ray cluster per hop: median {median(results['ray']['per_hop_ms']):.2f} ms")
        if "death" in parts:
            for power_off, times in ((False, args.kills), (True, args.ray_power_offs)):
                for _ in range(times):
                    row = {"power_off": power_off, **ray_node_death(ray, power_off)}
                    results["node_death"]["ray"].append(row)
                    log(f"ray, node {'powered off' if power_off else 'processes killed'}: first task "
                        f"again after {row['first_again_s']:.1f} s, last after {row['elsewhere_s']:.1f} s")
    finally:
        ray.down()


# --- report ----------------------------------------------------------------------------------


def markdown(results: dict[str, Any], args: argparse.Namespace) -> str:
    cols = [k for k in SETUPS if k in results["fanout"] or k in results["per_hop_ms"] or k in results["large"]]
    ray = results["ray"]
    header = "| workload | " + " | ".join(cols) + " | Ray cluster (3 nodes) | swarm/attached ÷ Ray |"
    lines = [header, "|---" * (len(cols) + 3) + "|"]

    def row(label: str, values: list[float | None], theirs: float | None, digits: int = 2) -> None:
        if theirs is None and all(v is None for v in values):
            return  # a part that did not run
        ours = values[cols.index("swarm/attached")] if "swarm/attached" in cols else None
        lines.append(f"| {label} | " + " | ".join(fmt(v, digits) for v in values)
                     + f" | {fmt(theirs, digits)} | {_x(ratio(ours, theirs))} |")

    for n in args.sizes:
        key = str(n)
        ray_rows = ray["fanout"].get(key, [])
        row(f"fan-out N = {n:,}, in-run s",
            [median([r["duration_s"] for r in results["fanout"].get(c, {}).get(key, [])]) for c in cols],
            median([r["workload_s"] for r in ray_rows]))
        row(f"fan-out N = {n:,}, process start to exit s",
            [median([r["wall_s"] for r in results["fanout"].get(c, {}).get(key, [])]) for c in cols], None)
    row("per hop, warm, ms", [median(results["per_hop_ms"].get(c, [])) for c in cols],
        median(ray.get("per_hop_ms", [])))
    if results["large"]:
        mb = next(iter(results["large"].values()))["mb"]
        row(f"{mb} MiB value between two hosts, MiB/s",
            [median([r["mb_per_s"] for r in results["large"].get(c, {}).get("runs", [])]) for c in cols], None, 0)
    blank = " | ".join("" for _ in cols[:-1])
    for power_off, how in ((True, "powered off"), (False, "crashed (processes killed, link up)")):
        ours = [r for r in results["node_death"]["engine"] if r["power_off"] == power_off]
        theirs = [r for r in results["node_death"]["ray"] if r["power_off"] == power_off]
        if ours or theirs:
            lines.append(f"| a worker host {how} → its calls running elsewhere, s (runs: {len(ours)} · "
                         f"{len(theirs)}) | {blank} | {span(ours, 'elsewhere_s')} | {span(theirs, 'elsewhere_s')} "
                         f"| {_x(ratio(median([r['elsewhere_s'] for r in ours]), median([r['elsewhere_s'] for r in theirs])))} |")
        if ours:
            lines.append(f"| … of which until the engine noticed, s | {blank} | {span(ours, 'noticed_s')} | | |")
    return "\n".join(lines)


def _x(value: float | None) -> str:
    return "–" if value is None else f"{value:.2g}×"


def span(rows: list[dict[str, Any]], key: str) -> str:
    """`low–high` of the rows' `key` (a single value alone)."""
    values = sorted(r[key] for r in rows if r[key] == r[key])
    if not values:
        return "–"
    low, high = f"{values[0]:.1f}", f"{values[-1]:.1f}"
    return low if low == high else f"{low}–{high}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"a subset of {','.join(PARTS)}")
    parser.add_argument("--sizes", default="1000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chain", type=int, default=200)
    parser.add_argument("--large-mb", type=int, default=64, help="large-value size in MiB (0: skip)")
    parser.add_argument("--kills", type=int, default=3, help="node deaths (engine; Ray: processes killed)")
    parser.add_argument("--ray-power-offs", type=int, default=1,
                        help="Ray node deaths by power-off (about 7 minutes each)")
    parser.add_argument("--no-docker", action="store_true", help="leave the docker backend out")
    parser.add_argument("--out", default=str(HERE / "results" / "swarm.json"), help="where the JSON goes")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    parts = {p for p in args.parts.split(",") if p}
    if parts - set(PARTS):
        parser.error(f"unknown part(s) {', '.join(sorted(parts - set(PARTS)))}: choose from {', '.join(PARTS)}")
    if os.geteuid() != 0:
        parser.error("the test Swarm is made of network namespaces and Docker engines: run as root")

    started = time.monotonic()
    results: dict[str, Any] = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": sys.argv,
        "machine": machine_facts(), "fanout": {}, "per_hop_ms": {}, "large": {},
        "node_death": {"engine": [], "ray": []}, "ray": {"fanout": {}}, "setup": {}, "skipped": [],
    }
    cluster = swarmlib.Cluster()
    interrupted = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` tears down
    with swarmlib.exclusive():
        try:
            cluster.up()
            image = cluster.push_runtime()
            gateway = cluster.gateway(image)
            results["setup"] = dict(cluster.timings)
            if parts - {"ray"}:
                engine_parts(args, parts, cluster, gateway, results)
            if "ray" in parts:
                ray_parts(args, parts, cluster, results)
        finally:
            cluster.down(quiet=True)
            signal.signal(signal.SIGTERM, interrupted)
    left = cluster.leftovers()
    if left:
        log(f"left behind: {left}")
    results["leftovers"] = left
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    results["elapsed_s"] = time.monotonic() - started
    results["markdown"] = markdown(results, args)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(results["markdown"])
    log(f"raw numbers in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
