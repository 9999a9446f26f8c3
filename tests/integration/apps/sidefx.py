"""Side effects the integration tests count: one line per execution, appended to a file whose
absolute path the test passes in (or sets as ENGINE_TEST_LOG for map/reduce items, which take
one argument). Lines are `tag|field|...|time`; one os.write of an O_APPEND file, so lines from
concurrent executors never interleave."""

from __future__ import annotations

import os
import time


def record(log: str | None, tag: str, *fields: object) -> float:
    path = log or os.environ["ENGINE_TEST_LOG"]
    now = time.time()
    line = "|".join([tag, *(str(f) for f in fields), repr(now)]) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    return now


def count(log: str, tag: str) -> int:
    try:
        with open(log) as fh:
            return sum(1 for line in fh if line.split("|", 1)[0] == tag)
    except FileNotFoundError:
        return 0


def wait_for(log: str, tag: str, n: int, timeout: float = 30.0) -> None:
    """Block until `n` lines tagged `tag` exist (a deadline, never an open-ended wait)."""
    deadline = time.monotonic() + timeout
    while count(log, tag) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {n} {tag!r} lines in {log}")
        time.sleep(0.02)


def wait_for_checkpoints(function: str, n: int, timeout: float = 30.0) -> None:
    """Block until `n` calls of `function` are checkpointed as succeeded in the engine's store
    ($ENGINE_STATE_DIR, process backend only): read-only, so it changes nothing it observes."""
    import sqlite3

    db = os.path.join(os.environ["ENGINE_STATE_DIR"], "engine.db")
    deadline = time.monotonic() + timeout
    while True:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            done = conn.execute(
                "SELECT count(*) FROM calls WHERE function = ? AND status = 'succeeded'",
                (function,),
            ).fetchone()[0]
        finally:
            conn.close()
        if done >= n:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {n} checkpointed {function} calls")
        time.sleep(0.02)
