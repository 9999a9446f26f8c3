"""Large values: results, arguments and awaited outcomes too large to travel inline, which move
through the scheduler's Blobs service."""

from __future__ import annotations

import hashlib
import random

from engine import application, function


def blob(size: int, seed: int) -> bytes:
    """`size` bytes that do not compress, the same for the same seed (the test recomputes them)."""
    return random.Random(seed).randbytes(size)


def fingerprint(value: bytes) -> tuple[int, str]:
    return len(value), hashlib.sha256(value).hexdigest()


@function()
def make(size: int, seed: int) -> bytes:
    return blob(size, seed)


@function()
def measure(*values: bytes) -> list[tuple[int, str]]:
    return [fingerprint(v) for v in values]


@application()
@function()
def pass_on(size: int) -> list[tuple[int, str]]:
    """Two large results become another call's arguments: executor → store → executor."""
    return measure.future(make.future(size, 1), make.future(size, 2))


@application()
@function()
def round_trip(size: int) -> bytes:
    """Awaits a large result, hands it and a large value of its own to a child, checks what the
    child saw, and returns a large value: the run's result."""
    a = make.future(size, 3).result()
    b = blob(size, 4)
    seen = measure.future(a, b).result()
    if seen != [fingerprint(a), fingerprint(b)]:
        raise AssertionError(f"the child saw {seen}")
    return a + b


@application()
@function()
def same_to_many(size: int, n: int) -> list[tuple[int, str]]:
    """One large value handed to `n` calls through map."""
    return measure.future.map([blob(size, 5)] * n)
