"""Executor start-up, measured: the ramp of a fan-out of slow calls, and a served first call.

Run by `run.py --parts ramp,first_call` (or alone: `python benchmarks/warm.py
ramp|ramp_served|first_call [--backend docker] [--warm 12]`; prints JSON). Numbers only, read
from the store; nothing here is a test.

- **ramp** — `apps/ramp/app.py`: `n` calls of `seconds` each, `slow`'s `max_containers` = n,
  by `engine run`, made at once or after the root worked `think` seconds (`RAMP_CASES`). From
  the store: the run's duration (ideal: just over `think + seconds`), how many `slow` calls had
  started (each on an executor of its own) 0.5 s and 1 s after the first one did, and when the
  last one started, after the first and after the calls were made. Each case twice: a first
  run, and a run again in the same state directory, whose pools start from the first run's
  call durations and which starts the first run's widths as its root begins. On docker, each
  run starts once Docker has removed the containers of the one before.
- **ramp_served** — the same app (10 × 2 s) served: an `engine server` with `--warm` blank
  executors (default 12) and one with 2, each given one request once its warm pool is full.
- **first_call** — an `engine server` with its warm pool (`ENGINE_WARM_EXECUTORS`, default 2)
  and one without (0), each given `apps/one_call.py` (or `--app models`: `apps/one_call_models.py`,
  the same call with a pydantic model in and out) once its blank executors are up: the time from
  the call's creation to its dispatch (the store's `created_at` → `started_at`) for a function
  with no executor yet, and POST → result for the whole request.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from server_bench import wait_serving  # beside this file

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ENGINE_CLI = [sys.executable, "-m", "engine.cli"]
RAMP_APP = HERE / "apps" / "ramp" / "app.py"
#: (calls, config beside the app, seconds the root works before its fan-out): 10 and 6 at once;
#: 10 after a root that works 1 s, as-is and with `slow`'s ten executors declared warm.
RAMP_CASES = ((10, "engine.yaml", 0.0), (6, "max6.yaml", 0.0), (10, "engine.yaml", 1.0), (10, "warm10.yaml", 1.0))


def _store_calls(state_dir: Path, run_id: str) -> tuple[Any, list[Any]]:
    sys.path.insert(0, str(REPO))
    from engine.store import open_store, store_url

    store = open_store(store_url(state_dir))
    try:
        return store.get_run(run_id), store.load_calls(run_id)
    finally:
        store.close()


def _wait_containers_gone(timeout: float = 30.0) -> None:
    """Until Docker has removed the containers of the `engine run` that just ended, which it
    does after that process exits (`DockerBackend.close`): a run again comes later than at
    once, and should not share the machine with that clean-up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = subprocess.run(["docker", "ps", "-aq", "--filter", "label=engine.managed=1"],
                              capture_output=True, text=True, check=True).stdout.split()
        if not left:
            return
        time.sleep(0.1)
    raise SystemExit(f"bench: Docker still has the last run's containers after {timeout:g} s")


def ramp(backend: str, n: int, seconds: float, config: Path, timeout: float = 300, *,
         again: bool = False, think: float = 0.0) -> dict[str, Any]:
    """One `engine run` of the ramp app; when each `slow` call started, from the store. With
    `again`, the run measured is the second in one state directory: its executor pools start
    from how long the first run's calls took, and as many executors as its calls used start
    once the root has its own (the store's `call_durations`), as a workflow run again does.
    `think`: seconds the root works before it fans out (ideal run: `think + seconds`)."""
    state_dir = Path(tempfile.mkdtemp(prefix="engine-bench-ramp-"))
    try:
        for _ in range(2 if again else 1):
            start = time.perf_counter()
            proc = subprocess.run([*ENGINE_CLI, "run", f"{RAMP_APP}:ramp", "--input",
                                   json.dumps({"n": n, "seconds": seconds, "think": think}), "--json",
                                   "--backend", backend,
                                   "--state-dir", str(state_dir), "--config", str(config)],
                                  cwd=REPO, capture_output=True, text=True, timeout=timeout)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                raise SystemExit(f"bench: ramp on {backend} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
            if backend == "docker":
                _wait_containers_gone()  # before the run again, and before the next case
        run_id = json.loads(proc.stdout.strip().splitlines()[-1])["run_id"]
        run, calls = _store_calls(state_dir, run_id)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    slow = [c for c in calls if c.function == "slow" and c.started_at is not None]
    starts = sorted(c.started_at for c in slow)
    first = starts[0]
    return {
        "backend": backend, "n": n, "seconds": seconds, "think": think, "config": config.name,
        "run_again": again, "run_id": run_id, "duration_s": run.ended_at - run.started_at, "wall_s": wall,
        "ideal_s": think + seconds, "to_first_slow_dispatch_s": first - run.started_at,
        "running_after_0_5_s": sum(1 for t in starts if t - first <= 0.5),
        "running_after_1_s": sum(1 for t in starts if t - first <= 1.0),
        "all_running_after_s": starts[-1] - first,
        # From the `slow` calls' creation (the tail call that made them all at once).
        "all_running_after_created_s": starts[-1] - min(c.created_at for c in slow),
        "loadavg_1m": os.getloadavg()[0],
    }


def ramp_served(backend: str, warm: int, n: int, seconds: float, timeout: float = 300) -> dict[str, Any]:
    """The ramp app served: an `engine server` (`apps/ramp/engine.yaml`'s `max_executors`) with
    `warm` blank executors, given one request once they are all up; when each `slow` call
    started, from the store. What a served application's ramp gets from a warm pool as wide as
    the ramp, against `engine run`, which starts its blank executors with the run."""
    run, calls, _ = _serve_one_request(backend, warm, RAMP_APP, "ramp", {"n": n, "seconds": seconds},
                                       config=RAMP_APP.parent / "engine.yaml", timeout=timeout)
    starts = sorted(c.started_at for c in calls if c.function == "slow" and c.started_at is not None)
    return {"backend": backend, "served": True, "warm_executors": warm, "n": n, "seconds": seconds,
            "run_id": run.run_id, "duration_s": run.ended_at - run.started_at,
            "to_first_slow_dispatch_s": starts[0] - run.started_at,
            "running_after_0_5_s": sum(1 for t in starts if t - starts[0] <= 0.5),
            "all_running_after_s": starts[-1] - starts[0], "loadavg_1m": os.getloadavg()[0]}


def _serve_one_request(backend: str, warm: int, app_file: Path, app_name: str, body: Any, *,
                       config: Path | None = None, timeout: float) -> tuple[Any, list[Any], float]:
    """An `engine server` (fresh state directory) with `warm` blank executors and `app_file`
    deployed; once its warm pool is full, one request to `app_name` with `body`, waited for.
    Returns the run and its calls from the store, and the seconds from POST to result."""
    state_dir = Path(tempfile.mkdtemp(prefix="engine-bench-served-"))
    port = _free_port()
    env = {**os.environ, "ENGINE_WARM_EXECUTORS": str(warm), "ENGINE_STATE_DIR": str(state_dir)}
    server = subprocess.Popen([*ENGINE_CLI, "server", "--port", str(port), "--state-dir", str(state_dir),
                               "--backend", backend, *(["--config", str(config)] if config else [])],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        _wait_served(server, port, warm, backend, timeout)
        deploy = subprocess.run([*ENGINE_CLI, "deploy", str(app_file), "--json"],
                                env={**env, "ENGINE_SERVER": f"http://127.0.0.1:{port}"}, cwd=REPO,
                                capture_output=True, text=True, timeout=timeout)
        if deploy.returncode != 0:
            raise SystemExit(f"bench: deploy failed: {deploy.stderr[-2000:]}")
        start = time.perf_counter()
        status, answer = _request(port, "POST", f"/v1/applications/{app_name}/runs?wait={int(timeout)}",
                                  body, timeout=timeout)
        request_s = time.perf_counter() - start
        if status != 200 or answer.get("status") != "succeeded":
            raise SystemExit(f"bench: the served run gave {status} {answer}")
        run, calls = _store_calls(state_dir, answer["run_id"])
    finally:
        _stop_server(server)
        shutil.rmtree(state_dir, ignore_errors=True)
    return run, calls, request_s


def _wait_served(server: subprocess.Popen[bytes], port: int, warm: int, backend: str, timeout: float) -> None:
    """Until the server answers and its warm pool holds `warm` blank executors."""
    deadline = time.monotonic() + timeout
    wait_serving(server, port, timeout)
    while _warm_ready(port) < warm:
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: the {backend} server's warm pool did not fill")
        time.sleep(0.05)


def _stop_server(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(port: int, method: str, path: str, body: Any = None, timeout: float = 120) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=json.dumps(body).encode() if body is not None else None)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def _warm_ready(port: int) -> int:
    """The server's `engine_executors_warm` gauge: blank executors up and held."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith("engine_executors_warm{"))


#: The applications `first_call` serves: file, application, request body.
FIRST_CALL_APPS = {"plain": ("one_call.py", "one", 1), "models": ("one_call_models.py", "one_model", {"x": 1})}


def first_call(backend: str, warm: int, timeout: float = 180, app: str = "plain") -> dict[str, Any]:
    """An `engine server` with `warm` blank executors; once they are up, one request of the
    application `app` (`FIRST_CALL_APPS`), whose function has no executor yet."""
    app_file, app_name, body = FIRST_CALL_APPS[app]
    run, calls, request_s = _serve_one_request(backend, warm, HERE / "apps" / app_file, app_name, body,
                                               timeout=timeout)
    root = next(c for c in calls if c.call_id == run.root_call_id)
    return {"backend": backend, "app": app, "warm_executors": warm, "run_id": run.run_id,
            "created_to_dispatch_ms": (root.started_at - root.created_at) * 1000,
            "run_duration_s": run.ended_at - run.started_at, "post_to_result_s": request_s,
            "loadavg_1m": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("ramp", "ramp_served", "first_call"))
    parser.add_argument("--warm", type=int, default=12, help="ramp_served's warm pool")
    parser.add_argument("--backend", default="docker")
    parser.add_argument("--app", choices=sorted(FIRST_CALL_APPS), default="plain", help="first_call's application")
    args = parser.parse_args()
    if args.what == "ramp":
        out = [ramp(args.backend, n, 2.0, RAMP_APP.parent / config, again=again, think=think)
               for again in (False, True)
               for n, config, think in RAMP_CASES]
    elif args.what == "ramp_served":
        out = [ramp_served(args.backend, args.warm, 10, 2.0), ramp_served(args.backend, 2, 10, 2.0)]
    else:
        out = [first_call(args.backend, 2, app=args.app), first_call(args.backend, 0, app=args.app)]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
