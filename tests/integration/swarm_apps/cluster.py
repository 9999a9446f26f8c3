"""Applications the swarm tests run (executors import them from this directory, shipped in
`Initialize`: no node shares a filesystem with the engine).

Every function reports where it ran (`ENGINE_NODE`, the hostname of the node the swarm backend
placed its executor on) and what its container enforces, read from inside it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from engine import Retries, application, function


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def enforced() -> dict:
    """The node, and the limits the container's cgroups enforce (cgroup v1 or v2)."""
    quota = _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") or _read("/sys/fs/cgroup/cpu.max").split(" ")[0]
    period = _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us") or (_read("/sys/fs/cgroup/cpu.max").split(" ") + ["100000"])[1]
    memory = _read("/sys/fs/cgroup/memory/memory.limit_in_bytes") or _read("/sys/fs/cgroup/memory.max")
    return {"node": os.environ.get("ENGINE_NODE", "?"), "cpus": int(quota) / int(period), "memory": int(memory)}


@function(cpu=0.25, memory=0.25, concurrency=4, timeout=20,
          retries=Retries(max_retries=2, initial_delay=0.1))
def where(i: int, seconds: float) -> dict:
    time.sleep(seconds)
    return {"i": i, **enforced()}


@function(cpu=0.25, memory=0.25, timeout=60, retries=Retries(max_retries=2, initial_delay=0.1))
def collect(*xs: dict) -> list:
    return list(xs)


@application()
@function(cpu=0.25, memory=0.25)
def fanout(n: int, seconds: float = 0.0) -> list:
    return collect.future(*[where.future(i, seconds) for i in range(n)])


@function(cpu=0.5, memory=0.25)
def limits() -> dict:
    try:
        Path("/opt/probe").write_text("x")
        root_writable = True
    except OSError:
        root_writable = False
    return {**enforced(), "uid": os.getuid(), "root_writable": root_writable,
            "docker_socket": os.path.exists("/var/run/docker.sock")}


@application()
@function(cpu=0.25, memory=0.25)
def check_limits() -> dict:
    return limits()


@function(memory=0.125, retries=Retries(max_retries=1, initial_delay=0.1))
def hog(mb: int) -> int:
    blocks = []
    for _ in range(mb):
        blocks.append(bytearray(1024 * 1024))
    return len(blocks)


@application()
@function(cpu=0.25, memory=0.25)
def oom(mb: int) -> int:
    return hog(mb)


@function(cpu=0.25, memory=0.25, max_containers=4)
def step(i: int, seconds: float) -> int:
    time.sleep(seconds)
    return i


@function(cpu=0.25, memory=0.25)
def total(*xs: int) -> int:
    return sum(xs)


@application()
@function(cpu=0.25, memory=0.25)
def steps(n: int, seconds: float) -> int:
    return total.future(*[step.future(i, seconds) for i in range(n)])


def _blob(size: int, seed: int) -> bytes:
    import random

    return random.Random(seed).randbytes(size)


@function(cpu=0.25, memory=0.5)
def make_big(size: int, seed: int) -> dict:
    """A value too large to travel inline, made on one node..."""
    return {"data": _blob(size, seed), "made_on": os.environ.get("ENGINE_NODE", "?")}


@function(cpu=0.25, memory=0.5)
def measure_big(made: dict) -> dict:
    """...and received on another: only the Blobs service connects them."""
    import hashlib

    data = made["data"]
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "made_on": made["made_on"],
            "measured_on": os.environ.get("ENGINE_NODE", "?")}


@application()
@function(cpu=0.25, memory=0.25)
def big_across(size: int) -> dict:
    return measure_big.future(make_big.future(size, 7))
