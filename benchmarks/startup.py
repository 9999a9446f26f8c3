"""Start-up costs of the engine itself, before and after a change, alternated in one session.

    python benchmarks/startup.py [--repeats 7] [--src NAME=DIR ...] [--parts import,help,executor,backend,run]

Each `--src NAME=DIR` is a source tree of the engine (a checkout, or `git archive REV | tar -x`);
it is put first on `PYTHONPATH`, so the same interpreter and dependencies run both. Without
`--src` the installed engine is measured alone. The rounds alternate the sources (A B A B ...) so
that a change in the machine's load hits both alike; the table shows medians and the load
average before and after.

- `import engine` — `python -X importtime -c "import engine"`: the package's cumulative time.
- `import executor` — the same for `engine.executor.server`, what every executor process imports
  before it listens (host Python; `executor in docker` below is the same inside the runtime image).
- `engine --help` — the console script's wall time, spawn to exit.
- `executor up` — `python -m engine.executor --listen 127.0.0.1:0 --port-file F` spawned to the
  port file written (listening), on the host.
- `executor in docker` — `docker run` of the source's runtime image, timing `import
  engine.executor.server` inside it (the container start itself is not in this figure).
- `process backend: first up` / `…: 10 more at once` — in a fresh process, `ProcessBackend`
  starts one executor (from nothing: on a tree with the executor template, the template's start
  is in it), then ten at once; the time until each `start_executor` returned (listening).
- `engine run, process` / `engine run, docker` — `engine run apps/one_call.py:one --input 1` in a
  fresh state directory, with the warm pool as configured (on by default), spawn to exit.

Prints one JSON object (every sample) and a markdown table on stderr.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable
# Every command runs here: `python -c` puts its working directory first on sys.path, which would
# shadow `--src` from inside a checkout.
NEUTRAL = tempfile.mkdtemp(prefix="engine-startup-cwd-")
atexit.register(os.rmdir, NEUTRAL)


def env_for(src: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def import_time(env: dict[str, str], module: str) -> float:
    out = subprocess.run([PY, "-X", "importtime", "-c", f"import {module}"], env=env, cwd=NEUTRAL,
                         capture_output=True, text=True, check=True).stderr
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[2].strip() == module:
            return int(parts[1]) / 1e6
    raise RuntimeError(f"no import time for {module}:\n{out[-2000:]}")


def wall(cmd: list[str], env: dict[str, str], cwd: str = NEUTRAL) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{cmd} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return took


def engine_cmd(*args: str) -> list[str]:
    # What the `engine` console script does, with this interpreter.
    return [PY, "-c", "import sys; from engine.cli import main; sys.exit(main())", *args]


def executor_up(env: dict[str, str]) -> float:
    with tempfile.TemporaryDirectory(prefix="engine-startup-") as tmp:
        port_file = Path(tmp) / "port"
        t0 = time.perf_counter()
        proc = subprocess.Popen([PY, "-m", "engine.executor", "--listen", "127.0.0.1:0",
                                 "--port-file", str(port_file), "--init-timeout", "30"], env=env, cwd=NEUTRAL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while not port_file.exists():
                if proc.poll() is not None:
                    raise RuntimeError("the executor exited before listening")
                time.sleep(0.002)
            return time.perf_counter() - t0
        finally:
            proc.kill()
            proc.wait()


BACKEND_CODE = """
import asyncio, json, shutil, tempfile, time
from engine.backends.base import blank_spec
from engine.backends.process import ProcessBackend

async def main():
    logs = tempfile.mkdtemp(prefix="engine-startup-")
    backend = ProcessBackend(log_dir=logs)
    try:
        t0 = time.perf_counter()
        await backend.start_executor(blank_spec({}))
        t1 = time.perf_counter()
        await asyncio.gather(*(backend.start_executor(blank_spec({})) for _ in range(10)))
        t2 = time.perf_counter()
    finally:
        await backend.close()
        shutil.rmtree(logs, ignore_errors=True)
    print(json.dumps([t1 - t0, t2 - t1]))

asyncio.run(main())
"""


def process_backend(env: dict[str, str]) -> tuple[float, float]:
    out = subprocess.run([PY, "-c", BACKEND_CODE], env=env, cwd=NEUTRAL, capture_output=True, text=True,
                         check=True).stdout
    first, ten = json.loads(out.strip().splitlines()[-1])
    return first, ten


def runtime_tag(env: dict[str, str]) -> str:
    code = "from engine.images.runtime import build_runtime_image as e; print(e())"
    try:
        return subprocess.run([PY, "-c", code], env=env, cwd=NEUTRAL, capture_output=True, text=True,
                              check=True).stdout.strip().splitlines()[-1]
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(exc.stderr[-2000:]) from None


def executor_in_docker(tag: str) -> float:
    code = ("import time; t = time.perf_counter(); import engine.executor.server; "
            "print(time.perf_counter() - t)")
    out = subprocess.run(["docker", "run", "--rm", "--entrypoint", "python3", tag, "-c", code],
                         capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def engine_run(env: dict[str, str], backend: str) -> float:
    with tempfile.TemporaryDirectory(prefix="engine-startup-") as tmp:
        env = dict(env, ENGINE_STATE_DIR=tmp)
        return wall(engine_cmd("run", str(HERE / "apps" / "one_call.py") + ":one", "--input", "1",
                               "--backend", backend), env, cwd=tmp)


def load() -> float:
    return os.getloadavg()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--src", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--parts", default="import,help,executor,run")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    sources = [tuple(s.split("=", 1)) for s in args.src] or [("installed", "")]
    envs = {name: env_for(src or None) for name, src in sources}

    tags: dict[str, str] = {}
    if "executor" in parts or "run" in parts:
        for name, env in envs.items():  # build (or find) each source's runtime image first
            tags[name] = runtime_tag(env)
            engine_run(env, "docker")  # and one unmeasured run each: caches warm on both sides

    samples: dict[str, dict[str, list[float]]] = {name: {} for name in envs}
    loads = [load()]
    for _ in range(args.repeats):
        for name, env in envs.items():
            s = samples[name]
            if "import" in parts:
                s.setdefault("import engine", []).append(import_time(env, "engine"))
                s.setdefault("import executor", []).append(import_time(env, "engine.executor.server"))
            if "help" in parts:
                s.setdefault("engine --help", []).append(wall(engine_cmd("--help"), env))
            if "executor" in parts:
                s.setdefault("executor up", []).append(executor_up(env))
                s.setdefault("executor in docker", []).append(executor_in_docker(tags[name]))
            if "backend" in parts:
                first, ten = process_backend(env)
                s.setdefault("process backend: first up", []).append(first)
                s.setdefault("process backend: 10 more at once, all up", []).append(ten)
            if "run" in parts:
                s.setdefault("engine run, process", []).append(engine_run(env, "process"))
                s.setdefault("engine run, docker", []).append(engine_run(env, "docker"))
        loads.append(load())

    medians = {name: {k: statistics.median(v) for k, v in s.items()} for name, s in samples.items()}
    print(json.dumps({"samples": samples, "medians": medians, "load": loads, "tags": tags}, indent=1))
    names = list(envs)
    print(f"| s, median of {args.repeats} | " + " | ".join(names) + " |", file=sys.stderr)
    print("|---|" + "---:|" * len(names), file=sys.stderr)
    for key in samples[names[0]]:
        print(f"| {key} | " + " | ".join(f"{medians[n][key]:.3f}" for n in names) + " |", file=sys.stderr)
    print(f"load average (1 min) from {loads[0]:.2f} to {loads[-1]:.2f}, "
          f"range {min(loads):.2f}-{max(loads):.2f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
