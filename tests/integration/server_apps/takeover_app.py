"""Runs that take a while, for the tests of servers taking over each other's runs: `steps` runs
`n` sequential `step` calls of `seconds` each (a blocking orchestrator: after a take-over it runs
again and re-creates its children, which are reused from their checkpoints when finished)."""

from __future__ import annotations

import os
import time

from engine import application, function


def record(log: str, *fields: object) -> None:
    line = "|".join(str(f) for f in fields) + "\n"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@function()
def step(log: str, tag: str, i: int, seconds: float) -> int:
    record(log, "start", tag, i)
    time.sleep(seconds)
    record(log, "end", tag, i)
    return i


@application()
@function()
def steps(log: str, tag: str, n: int, seconds: float) -> int:
    return sum(step(log, tag, i, seconds) for i in range(n))


@application()
@function()
def inc(x: int) -> int:
    return x + 1


@function()
def make(size: int) -> bytes:
    return bytes(range(256)) * (size // 256)


@function()
def digest_of(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


@application()
@function()
def large(size: int) -> str:
    """A value far over the inline limit, passed from one executor to another through the
    Blobs service; the run's result is large too."""
    data = make(size)
    return digest_of(data) + ":" + "y" * size
