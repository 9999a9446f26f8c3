"""Cold start on the docker backend, decomposed. Run by `run.py --parts cold`; prints one JSON object.

    python benchmarks/cold_start.py [--target apps/one_call.py:one] [--input 1]

One fresh process runs `apps/one_call.py:one` — a single call of a function whose container is
not running, with no warm pool (`run.py` sets ENGINE_WARM_EXECUTORS=0; `run.py` times `engine
run` with its warm pool apart) — through `engine.runner.execute`, exactly what `engine run --backend docker` does
after parsing its arguments. Nothing in the engine is changed: the probe wraps a few of its
methods (in this process only) to note when each step begins and ends, in `time.time()` — the
clock the store's timestamps use — so the store's run and call times and the Docker engine's own
`State.StartedAt` line up with them:

    process spawned (the parent's clock, BENCH_SPAWN_T)
      └ python up ─ engine imported ─ app loaded
    execute()
      ├ backend set-up (make_backend: docker client, runtime image tag and check)
      ├ scheduler start (callback gRPC server, orphan clean-up: a container listing)
      ├ run started ............................................. store: runs.started_at
      │   ├ start_executor ─ inspect_image ─ create_container ─ start ─ inspect_container
      │   │   └ container's process started ................... docker: State.StartedAt
      │   ├ executor accepting on :50051 (the backend's connect poll, every 20 ms)
      │   ├ Initialize answered (code unzipped and imported)    (ExecutorState.open)
      │   ├ call dispatched ...................................... store: calls.started_at
      │   └ call's result checkpointed ........................... store: calls.ended_at
      ├ run ended ............................................... store: runs.ended_at
      └ scheduler closed (containers removed)
    exit

`run.py` reports the run's stored duration (run started → run ended) as the engine's cold start,
the steps above as its decomposition, and the whole process (spawn → exit) as end to end.
"""

from __future__ import annotations

import os
import time

T_PYTHON_UP = time.time()

import argparse  # noqa: E402 - the first timestamp is taken before any import
import functools  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from datetime import datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

MARKS: dict[str, float] = {}
EVENTS: list[tuple[str, float, float]] = []
_lock = threading.Lock()


def mark(name: str, when: float | None = None) -> None:
    """First occurrence wins: the cold start is about the first executor."""
    with _lock:
        MARKS.setdefault(name, time.time() if when is None else when)


def timed_sync(name: str, fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            with _lock:
                EVENTS.append((name, t0, time.time()))

    return wrapper


def timed_async(name: str, fn: Any) -> Any:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.time()
        try:
            return await fn(*args, **kwargs)
        finally:
            with _lock:
                EVENTS.append((name, t0, time.time()))

    return wrapper


def docker_time(text: str) -> float | None:
    """Docker's RFC 3339 timestamps carry nanoseconds; datetime takes microseconds."""
    if not text or text.startswith("0001-"):
        return None
    head, _, frac = text.rstrip("Z").partition(".")
    frac = (frac + "000000")[:6]
    return datetime.fromisoformat(f"{head}.{frac}+00:00").timestamp()


def instrument() -> dict[str, str]:
    """Wrap the engine's steps (this process only). Returns {container id: StartedAt}, filled
    in as containers start."""
    import engine.images as images
    import engine.runner as runner
    from engine.backends import docker as docker_backend
    from engine.scheduler import pools
    from engine.scheduler.scheduler import Scheduler

    started_at: dict[str, str] = {}
    runner.make_backend = timed_sync("make_backend", runner.make_backend)
    images.build_runtime_image = timed_sync("build_runtime_image", images.build_runtime_image)
    Scheduler.start = timed_async("scheduler_start", Scheduler.start)  # type: ignore[method-assign]
    Scheduler.close = timed_async("scheduler_close", Scheduler.close)  # type: ignore[method-assign]

    original_open = pools.ExecutorState.open

    def open_(self: Any) -> None:
        mark("initialize_done")
        original_open(self)

    pools.ExecutorState.open = open_  # type: ignore[method-assign]

    base = docker_backend.DockerBackend

    class TimedDockerBackend(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            t0 = time.time()
            super().__init__(*args, **kwargs)
            EVENTS.append(("docker_backend_init", t0, time.time()))
            api = self._client.api
            for name in ("inspect_image", "create_container", "start", "inspect_container",
                         "remove_container", "containers"):
                setattr(api, name, timed_sync(f"api.{name}", getattr(api, name)))
            original_inspect = api.inspect_container

            def inspect(container: str, *a: Any, **k: Any) -> Any:
                attrs = original_inspect(container, *a, **k)
                state = attrs.get("State") or {}
                if state.get("StartedAt"):
                    started_at.setdefault(attrs["Id"], state["StartedAt"])
                return attrs

            api.inspect_container = inspect

        async def start_executor(self, spec: Any) -> Any:
            mark("start_executor_begin")
            handle = await super().start_executor(spec)
            mark("start_executor_end")
            return handle

        async def _wait_accepting(self, container_id: str, ip: str, function: str) -> None:
            mark("wait_accepting_begin")
            await super()._wait_accepting(container_id, ip, function)
            mark("accepting")

        async def cleanup_orphans(self) -> int:
            t0 = time.time()
            removed = await super().cleanup_orphans()
            EVENTS.append(("cleanup_orphans", t0, time.time()))
            return int(removed)

        async def close(self) -> None:
            t0 = time.time()
            await super().close()
            EVENTS.append(("backend_close", t0, time.time()))

    docker_backend.DockerBackend = TimedDockerBackend  # type: ignore[misc]
    return started_at


def first(name: str, after: float = 0.0) -> tuple[float, float] | None:
    for n, t0, t1 in EVENTS:
        if n == name and t0 >= after:
            return t0, t1
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default=str(HERE / "apps" / "one_call.py") + ":one")
    parser.add_argument("--input", default="1")
    args = parser.parse_args()
    spawn = float(os.environ.get("BENCH_SPAWN_T", T_PYTHON_UP))

    import engine.runner as runner
    from engine.app import load_app, parse_input

    started_at = instrument()
    mark("engine_imported")
    app = load_app(args.target)
    kwargs = parse_input(app.function, args.input)
    mark("app_loaded")
    state_dir = Path(tempfile.mkdtemp(prefix="engine-bench-cold-"))
    try:
        mark("execute_begin")
        outcome = runner.execute(app, kwargs=kwargs, state_dir=state_dir, backend="docker")
        mark("execute_end")
        from engine.store import open_store, store_url

        store = open_store(store_url(state_dir))
        try:
            run = store.get_run(outcome.run_id)
            calls = store.load_calls(outcome.run_id)
        finally:
            store.close()
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    root = next(c for c in calls if c.call_id == run.root_call_id)
    mark("run_started", run.started_at)
    mark("call_dispatched", root.started_at)
    mark("call_ended", root.ended_at)
    mark("run_ended", run.ended_at)
    after = MARKS["run_started"]
    for key, name in (("create", "api.create_container"), ("start", "api.start"),
                      ("image_check", "api.inspect_image")):
        span = first(name, after - 0.001)
        if span:
            mark(f"{key}_begin", span[0])
            mark(f"{key}_end", span[1])
    if started_at:
        when = docker_time(next(iter(started_at.values())))
        if when is not None:
            mark("container_process_started", when)
    print(json.dumps({
        "run_id": outcome.run_id, "status": outcome.status, "result": outcome.result,
        "spawn": spawn, "python_up": T_PYTHON_UP, "marks": MARKS,
        "events": [{"name": n, "start": t0, "end": t1} for n, t0, t1 in EVENTS],
    }))


# --- read by run.py ---------------------------------------------------------------------------

#: `docker run` of the runtime image, to the first byte the container sends to a socket on the
#: host: the floor a per-function container pays before any engine code runs.
FLOORS = {
    "bare": "docker run --rm IMAGE python3: connect and send one byte (no imports)",
    "imports": "the same, after importing grpc, cloudpickle and pydantic (the floor the engine's share is "
               "measured above)",
    "executor": "the same with the engine's container flags (--init, read-only root, tmpfs, cap-drop ALL, "
                "no-new-privileges, 1 CPU, 1 GB, uid 10001), after importing engine.executor.server",
}
_FLOOR_CODE = {
    "bare": "import socket",
    "imports": "import socket, grpc, cloudpickle, pydantic",
    "executor": "import socket, engine.executor.server",
}
_ENGINE_FLAGS = [
    "--init", "--read-only", "--tmpfs", "/tmp:rw,nosuid,nodev,size=10240m",
    "--tmpfs", "/home/engine:rw,exec,nosuid,nodev,size=10240m,uid=10001,gid=10001",
    "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--cpus", "1",
    "--memory", "1g", "--memory-swap", "1g", "--user", "10001",
]


def docker_run_floor(image: str, gateway: str, variant: str, label: str, timeout: float = 60) -> float:
    """Seconds from starting `docker run` to the first byte its container sends to the host."""
    import secrets
    import socket
    import subprocess

    name = f"engine-bench-floor-{secrets.token_hex(4)}"
    with socket.socket() as server:
        server.bind((gateway, 0))
        server.listen(1)
        server.settimeout(timeout)
        port = server.getsockname()[1]
        code = f"{_FLOOR_CODE[variant]}; s = socket.create_connection(({gateway!r}, {port})); s.sendall(b'x'); s.close()"
        flags = _ENGINE_FLAGS if variant == "executor" else []
        cmd = ["docker", "run", "--rm", "--name", name, "--label", f"{label}=1", "--network", "bridge", *flags,
               "--entrypoint", "python3", image, "-c", code]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(timeout)
                first_byte = conn.recv(1)
            elapsed = time.perf_counter() - start
            proc.wait(timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            proc.kill()
            proc.wait()
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"docker run floor ({variant}) failed: {exc} {err[-1000:]}") from exc
        finally:
            if proc.stderr:
                proc.stderr.close()
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    if first_byte != b"x":
        raise RuntimeError(f"docker run floor ({variant}): expected one byte, got {first_byte!r}")
    return elapsed


def phases(probe: dict[str, Any]) -> dict[str, float | None]:
    """The probe's marks as contiguous steps (each starts where the previous one ended, so they
    add up), and a few overlapping views of the container's start."""
    m = probe["marks"]

    def span(a: str, b: str) -> float | None:
        return m[b] - m[a] if a in m and b in m else None

    events = {e["name"]: e["end"] - e["start"] for e in probe.get("events", [])}
    setup = span("app_loaded", "run_started")
    backend = events.get("make_backend")
    sched = events.get("scheduler_start")
    return {
        # inside the run: its stored duration, step by step
        "scheduler_to_start_executor_s": span("run_started", "start_executor_begin"),
        "image_check_s": span("start_executor_begin", "create_begin"),
        "container_create_s": span("create_begin", "create_end"),
        "container_start_s": span("create_end", "start_end"),
        "after_start_inspect_s": span("start_end", "wait_accepting_begin"),
        "executor_listening_s": span("wait_accepting_begin", "accepting"),
        "initialize_s": span("accepting", "initialize_done"),
        "dispatch_s": span("initialize_done", "call_dispatched"),
        "first_call_s": span("call_dispatched", "call_ended"),
        "finish_s": span("call_ended", "run_ended"),
        "cold_start_s": span("run_started", "run_ended"),
        # the same container start seen from Docker's own clock (State.StartedAt)
        "start_call_to_process_started_s": span("create_end", "container_process_started"),
        "process_started_to_listening_s": span("container_process_started", "accepting"),
        # around the run: the rest of the process
        "interpreter_s": probe["python_up"] - probe["spawn"],
        "engine_import_s": m["engine_imported"] - probe["python_up"],
        "load_app_s": span("engine_imported", "app_loaded"),
        "backend_setup_s": backend,
        "build_runtime_image_check_s": events.get("build_runtime_image"),
        "scheduler_start_s": sched,
        "other_setup_s": setup - (backend or 0) - (sched or 0) if setup is not None else None,
        "close_s": span("run_ended", "execute_end"),
        "backend_close_s": events.get("backend_close"),
        "exit_s": probe["exited"] - m["execute_end"] if "exited" in probe else None,
        "end_to_end_s": probe["exited"] - probe["spawn"] if "exited" in probe else None,
    }


if __name__ == "__main__":
    main()
