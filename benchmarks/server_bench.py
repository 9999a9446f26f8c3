"""Benchmark `engine server`. Reports numbers; asserts nothing.

    python benchmarks/server_bench.py [--runs 200] [--seconds 10] [--clients 8] [--burst 500]
                                      [--json benchmarks/results/server.json]

A real server process on loopback (process backend, fresh state directory) serves
`apps/one_call.py:one`, one call that returns at once. Measured, one after the other:

- **POST → result** — `--runs` sequential runs, each timed from sending the POST until a
  `GET /v1/runs/{id}` (polled every millisecond on a keep-alive connection) says `succeeded`:
  the server's overhead for a one-call run (admission and its commit, the queue, the run's start,
  one dispatch to a warm executor, the checkpoint, the read back). The executor is started by
  warm-up runs first. The run's own `duration` (start to end, as stored) and `queued_seconds` are
  reported beside it, as medians.
- **sustained submissions/s** — `--clients` threads POST for `--seconds` seconds, each on its
  own keep-alive connection, while the accepted runs execute: accepted per second (every POST
  must be a 202), the deepest queue seen (`/healthz`), and how long after the last POST every
  run had finished, i.e. the rate at which runs complete.
- **burst** — `--burst` POSTs sent at once, each on its own connection: the time until every
  one is accepted, and until every run has finished.

The client threads share the machine (2 cores here) with the server and its executors, so the
rates are a floor for what the server would do with the clients elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
APP = HERE / "apps" / "one_call.py"


def log(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Client:
    def __init__(self, port: int, timeout: float = 60) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        self.conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        response = self.conn.getresponse()
        return response.status, json.loads(response.read())


def wait_serving(server: subprocess.Popen[bytes], port: int, timeout: float, log_file: Path | None = None) -> None:
    """Until the `engine server` process `server` answers `GET /healthz` on `port`; SystemExit
    (with the end of `log_file`) if it exits first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if Client(port, timeout=2).call("GET", "/healthz")[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            tail = f": {log_file.read_text(errors='replace')[-2000:]}" if log_file and log_file.exists() else ""
            raise SystemExit(f"bench: the server on port {port} did not start{tail}")
        time.sleep(0.05)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def wait_all(client: Client, total: int, timeout: float = 600) -> float:
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        _, data = client.call("GET", "/v1/runs?application=one&status=succeeded&limit=1")
        if data["total"] >= total:
            return time.monotonic() - began
        time.sleep(0.05)
    raise RuntimeError(f"runs did not finish within {timeout} s")


def latency(port: int, runs: int) -> dict[str, Any]:
    client = Client(port)
    samples, durations, queued = [], [], []
    for i in range(runs + 5):
        began = time.perf_counter()
        status, accepted = client.call("POST", "/v1/applications/one/runs", i)
        assert status == 202, accepted
        while True:
            _, run = client.call("GET", f"/v1/runs/{accepted['run_id']}")
            if run["status"] in ("succeeded", "failed"):
                break
            time.sleep(0.001)
        elapsed = time.perf_counter() - began
        assert run["status"] == "succeeded", run
        if i >= 5:  # the first runs start the executor
            samples.append(elapsed)
            durations.append(run["duration"])
            queued.append(run["queued_seconds"])
    return {
        "runs": runs,
        "post_to_result_ms": {"median": statistics.median(samples) * 1e3, "p90": pct(samples, 0.9) * 1e3,
                              "p99": pct(samples, 0.99) * 1e3, "min": min(samples) * 1e3},
        "run_duration_ms_median": statistics.median(durations) * 1e3,
        "queued_ms_median": statistics.median(queued) * 1e3,
    }


def sustained(port: int, seconds: float, clients: int, already: int) -> dict[str, Any]:
    stop = time.monotonic() + seconds
    counts = [0] * clients
    refused = [0] * clients
    depth = [0]

    def submitter(k: int) -> None:
        client = Client(port)
        while time.monotonic() < stop:
            status, _ = client.call("POST", "/v1/applications/one/runs", k)
            if status == 202:
                counts[k] += 1
            else:
                refused[k] += 1

    def watcher() -> None:
        client = Client(port)
        while time.monotonic() < stop:
            _, health = client.call("GET", "/healthz")
            depth[0] = max(depth[0], health["runs_queued"])
            time.sleep(0.1)

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(clients)]
    threads.append(threading.Thread(target=watcher))
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    posting = time.monotonic() - began
    accepted = sum(counts)
    drain = wait_all(Client(port), already + accepted)
    return {
        "clients": clients, "seconds": round(posting, 2), "accepted": accepted, "refused": sum(refused),
        "submissions_per_s": accepted / posting, "max_queue_depth": depth[0],
        "drain_after_last_post_s": drain, "completed_runs_per_s": accepted / (posting + drain),
    }


def burst(port: int, n: int, already: int) -> dict[str, Any]:
    async def one(i: int) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = json.dumps(i).encode()
        writer.write((f"POST /v1/applications/one/runs HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}"
                      "\r\nConnection: close\r\n\r\n").encode() + body)
        await writer.drain()
        raw = await reader.read()
        writer.close()
        return int(raw.split(b" ", 2)[1])

    async def all_of_them() -> list[int]:
        return await asyncio.gather(*(one(i) for i in range(n)))

    began = time.monotonic()
    statuses = asyncio.run(all_of_them())
    accepted_s = time.monotonic() - began
    finished_s = accepted_s + wait_all(Client(port), already + n)
    return {"submissions": n, "accepted": statuses.count(202), "all_accepted_s": accepted_s,
            "all_finished_s": finished_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--json", type=Path, default=HERE / "results" / "server.json")
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="engine-server-bench-"))
    port = free_port()
    env = {**os.environ, "ENGINE_BACKEND": "process"}
    env.pop("ENGINE_TOKEN", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "server", "--port", str(port), "--state-dir", str(state / "state"),
         "--backend", "process"], stdout=subprocess.DEVNULL, stderr=open(state / "server.log", "wb"), env=env)
    try:
        wait_serving(server, port, 30, state / "server.log")
        deployed = subprocess.run([sys.executable, "-m", "engine.cli", "deploy", str(APP),
                                   "--server", f"http://127.0.0.1:{port}"], capture_output=True, text=True)
        if deployed.returncode:
            raise RuntimeError(deployed.stderr)
        log(f"POST → result, {args.runs} sequential runs")
        lat = latency(port, args.runs)
        done = args.runs + 5
        log(f"sustained submissions, {args.clients} clients for {args.seconds:g} s")
        sus = sustained(port, args.seconds, args.clients, done)
        done += sus["accepted"]
        log(f"burst of {args.burst}")
        bur = burst(port, args.burst, done)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    results = {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "latency": lat, "sustained": sus, "burst": bur,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    p = lat["post_to_result_ms"]
    print(f"POST → result (one call, warm executor): median {p['median']:.1f} ms, p90 {p['p90']:.1f} ms, "
          f"p99 {p['p99']:.1f} ms, min {p['min']:.1f} ms; run duration median {lat['run_duration_ms_median']:.1f} ms, "
          f"queued median {lat['queued_ms_median']:.2f} ms")
    print(f"sustained: {sus['submissions_per_s']:.0f} submissions/s accepted by {sus['clients']} clients "
          f"({sus['accepted']} in {sus['seconds']} s, {sus['refused']} refused), max queue {sus['max_queue_depth']}, "
          f"all done {sus['drain_after_last_post_s']:.1f} s after the last POST "
          f"({sus['completed_runs_per_s']:.0f} runs/s completed)")
    print(f"burst: {bur['accepted']}/{bur['submissions']} accepted in {bur['all_accepted_s']:.2f} s, "
          f"all finished after {bur['all_finished_s']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
