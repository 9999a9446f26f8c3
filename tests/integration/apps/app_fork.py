"""Functions that start processes from inside a call: a `multiprocessing` pool (fork and spawn),
a bare `os.fork`, a subprocess, forked children that leave the function without `os._exit` — for
test_fork.py. Runs on the process and the docker backend.

Each function takes `before`, the pids an earlier call of it on the same executor started, and
returns what it computed, the pids it started, its executor's pid, and which of `before` still
run: `fork_app` calls one function twice, so that its second call shows the executor still
works after a fork and that nothing the first one started was left running.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from engine import application, function


def square_and_pid(x: int) -> tuple[int, int]:
    """A pool's worker function: module-level, so that a spawned worker can import it."""
    return x * x, os.getpid()


def stat_fields(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state first, then the ppid), or []."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()
    except OSError:
        return []


def running(pids: list[int]) -> list[int]:
    """Which of these processes still run here (a zombie does not)."""
    return [pid for pid in pids if stat_fields(pid)[:1] not in ([], ["Z"], ["X"])]


def children() -> list[int]:
    """This executor's running child processes."""
    own = str(os.getpid())
    return sorted(int(entry) for entry in os.listdir("/proc")
                  if entry.isdigit() and stat_fields(int(entry))[:2] in (["R", own], ["S", own], ["D", own]))


def helpers() -> list[int]:
    """The one child that outlives a call by design: the resource tracker `multiprocessing`
    starts with its first spawned process, which lives as long as the executor."""
    found = []
    for pid in children():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if b"resource_tracker" in fh.read():
                    found.append(pid)
        except OSError:
            pass
    return found


def report(result: Any, pids: list[int], before: list[int], **extra: Any) -> dict[str, Any]:
    """What a call returns; `still_running`: which of `before` run on, besides `helpers`."""
    kept = helpers()
    return {"result": result, "pids": pids, "executor": os.getpid(), "helpers": kept,
            "still_running": [pid for pid in running(before) if pid not in kept], **extra}


def sleep_in_worker(path: str) -> None:
    with open(path, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(600)


def pool_map(method: str, n: int, before: list[int]) -> dict[str, Any]:
    """`Pool.map`, then a task that never ends, which `Pool.terminate()` must end (it sends
    SIGTERM to the workers). Waits with deadlines, so that a lost task fails the call."""
    marker = os.path.join(tempfile.mkdtemp(), "sleeping")
    pool = multiprocessing.get_context(method).Pool(2)
    try:
        results = pool.map_async(square_and_pid, range(n)).get(timeout=30)
        pool.apply_async(sleep_in_worker, (marker,))
        deadline = time.monotonic() + 30
        while not os.path.exists(marker):
            if time.monotonic() > deadline:
                raise RuntimeError("no pool worker took the sleeping task within 30 s")
            time.sleep(0.01)
        started = sorted(set(children()) | {pid for _, pid in results})
    finally:
        pool.terminate()
    return report([value for value, _ in results], started, before)


@function()
def fork_pool(n: int, before: list[int]) -> dict[str, Any]:
    return pool_map("fork", n, before)


@function()
def spawn_pool(n: int, before: list[int]) -> dict[str, Any]:
    return pool_map("spawn", n, before)


@function()
def bare_fork(n: int, before: list[int]) -> dict[str, Any]:
    """`os.fork()` ten times: each child computes, writes its answer to a pipe and `os._exit`s.
    Ten, because gRPC's fork handlers crashed about one child in four."""
    results, pids, codes = [], [], []
    for _ in range(10):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(read_end)
                os.write(write_end, json.dumps([i * i for i in range(n)]).encode())
            finally:
                os._exit(7)
        os.close(write_end)
        with os.fdopen(read_end) as fh:
            text = fh.read()
        _, status = os.waitpid(pid, 0)
        results.append(json.loads(text) if text else None)
        pids.append(pid)
        codes.append(os.waitstatus_to_exitcode(status))
    return report(results, pids, before, exit_codes=codes)


def queue_worker(results: Any, n: int) -> None:
    results.put([i * i for i in range(n)])


@function()
def mp_process(n: int, before: list[int]) -> dict[str, Any]:
    """`multiprocessing.Process` (fork) handing its answer back on a `Queue`: a child that ends
    well must exit with 0, and the request context is refused in it."""
    results: Any = multiprocessing.get_context("fork").Queue()
    child = multiprocessing.get_context("fork").Process(target=queue_worker, args=(results, n))
    child.start()
    value = results.get(timeout=30)
    child.join(30)
    context = multiprocessing.get_context("fork").Queue()
    probe = multiprocessing.get_context("fork").Process(target=context_probe, args=(context,))
    probe.start()
    refused = context.get(timeout=30)
    probe.join(30)
    return report(value, [child.pid, probe.pid], before, exit_code=child.exitcode, context=refused)


def context_probe(out: Any) -> None:
    from engine import RequestContext, SDKUsageError

    try:
        RequestContext.get()
    except SDKUsageError as exc:
        out.put(f"SDKUsageError: {'forked' in str(exc)}")
    else:
        out.put("a context")


@function()
def quick(x: int) -> int:
    return x


@function()
def fork_and_leave(n: int, before: list[int]) -> dict[str, Any]:
    """Children that leave this function without `os._exit`: by `sys.exit(3)`, by an exception
    (calling an engine function, which a forked child may not), by returning."""
    pids = []
    for how in ("exit", "engine", "return"):
        pid = os.fork()
        if pid == 0:
            if how == "exit":
                sys.exit(3)
            if how == "engine":
                quick(1)
            return {"the child": "returned"}
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    return report(codes, pids, before)


@function()
def run_subprocess(n: int, before: list[int]) -> dict[str, Any]:
    proc = subprocess.Popen([sys.executable, "-c", f"print([i * i for i in range({n})])"],
                            stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=60)
    return report(json.loads(out), [proc.pid], before, exit_code=proc.returncode)


KINDS = {"fork_pool": fork_pool, "spawn_pool": spawn_pool, "bare_fork": bare_fork, "mp_process": mp_process,
         "subprocess": run_subprocess, "fork_and_leave": fork_and_leave}


@application()
@function()
def fork_app(kind: str, n: int) -> list[dict[str, Any]]:
    """Two calls of one kind on one executor: what each returned."""
    fn = KINDS[kind]
    first = fn(n, [])
    return [first, fn(n, first["pids"])]
