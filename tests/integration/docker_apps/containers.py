"""Applications the Docker integration tests run (imported by executors from this directory)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from engine import Retries, application, function


@function()
def work(i: int) -> int:
    return i * 2


@function()
def total(*xs: int) -> int:
    return sum(xs)


@application()
@function()
def fanout(n: int) -> int:
    return total.future(*[work.future(i) for i in range(n)])


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


@function(cpu=0.5, memory=0.25)
def limits() -> dict:
    """What the container enforces, read from inside it (cgroup v1 or v2)."""
    quota = _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") or _read("/sys/fs/cgroup/cpu.max").split(" ")[0]
    period = _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us") or (_read("/sys/fs/cgroup/cpu.max").split(" ") + ["100000"])[1]
    memory = _read("/sys/fs/cgroup/memory/memory.limit_in_bytes") or _read("/sys/fs/cgroup/memory.max")
    try:
        Path("/opt/probe").write_text("x")
        root_writable = True
    except OSError:
        root_writable = False
    return {
        "uid": os.getuid(),
        "cpus": int(quota) / int(period),
        "memory": int(memory),
        "root_writable": root_writable,
        "docker_socket": os.path.exists("/var/run/docker.sock"),
        "hostname": socket.gethostname(),
    }


@application()
@function()
def check_limits() -> dict:
    return limits()


@function(memory=0.125, retries=Retries(max_retries=1, initial_delay=0.1))
def hog(mb: int) -> int:
    blocks = []
    for _ in range(mb):
        blocks.append(bytearray(1024 * 1024))
    return len(blocks)


@application()
@function()
def oom(mb: int) -> int:
    return hog(mb)


@function(timeout=2)
def sleeper(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@application()
@function()
def timeout_app(seconds: float) -> float:
    return sleeper(seconds)


@function(retries=Retries(max_retries=2, initial_delay=0.1))
def slow_branch(seconds: float) -> str:
    time.sleep(seconds)
    return f"slow on {socket.gethostname()}"


@function()
def fast_branch(i: int) -> str:
    return f"fast {i}"


@function()
def gather(*parts: str) -> list:
    return list(parts)


@application()
@function()
def branches(slow_seconds: float) -> list:
    """Four fast siblings and one slow branch, joined by a tail call."""
    futures = [fast_branch.future(i) for i in range(4)] + [slow_branch.future(slow_seconds)]
    return gather.future(*futures)


@function(max_containers=4)
def step(i: int, seconds: float) -> int:
    time.sleep(seconds)
    return i


@application()
@function()
def steps(n: int, seconds: float) -> int:
    return total.future(*[step.future(i, seconds) for i in range(n)])


@function(memory=0.5)
def big(size: int) -> bytes:
    return bytes(range(256)) * (size // 256)


@function(memory=0.5)
def size_of(data: bytes) -> list:
    import hashlib

    return [len(data), hashlib.sha256(data).hexdigest()]


@application()
@function(memory=0.25)
def big_between(size: int) -> list:
    """A value larger than any gRPC message, from one container to another."""
    return size_of.future(big.future(size))
