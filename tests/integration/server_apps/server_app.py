"""Applications the server tests deploy (`engine deploy`): the whole directory is the bundle.

Side effects go to files whose absolute paths the tests pass in: one line per execution, so a
test can count executions, and gates (files the test creates) hold calls open for as long as a
test needs them running.
"""

from __future__ import annotations

import os
import time

from pydantic import BaseModel

from engine import application, function, run_remote_application


def record(log: str, *fields: object) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, ("|".join(str(f) for f in fields) + "\n").encode())
    finally:
        os.close(fd)


def count(log: str, tag: str) -> int:
    try:
        with open(log) as fh:
            return sum(1 for line in fh if line.rstrip("\n").split("|", 1)[0] == tag)
    except FileNotFoundError:
        return 0


@application()
@function()
def inc(x: int) -> int:
    """One call: the smallest application (burst test, benchmarks)."""
    return x + 1


@function()
def square(i: int) -> int:
    return i * i


@function()
def total(*values: int) -> int:
    return sum(values)


@application()
@function()
def fan(n: int) -> int:
    """Fan-out and a tail call: n squares, summed by `total`, which the caller returns."""
    return total.future(*[square.future(i) for i in range(n)])


@function(concurrency=8)  # one executor holds every waiting call: tests start faster
def wait_gate(i: int, gate: str, log: str) -> int:
    record(log, "started", i, os.getpid())
    print(f"item {i} waiting for the gate")
    deadline = time.monotonic() + 120
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise RuntimeError("the gate never opened")
        time.sleep(0.02)
    record(log, "finished", i)
    return i


@application()
@function()
def gated(n: int, gate: str, log: str) -> int:
    """n calls that run until the file `gate` exists, then a sum (a tail call)."""
    return total.future(*[wait_gate.future(i, gate, log) for i in range(n)])


@function()
def step_one(log: str) -> str:
    record(log, "step_one")
    return "one"


@function()
def step_two(value: str, log: str) -> str:
    record(log, "step_two")
    if count(log, "step_two") < 2:
        raise RuntimeError("step two fails the first time")
    return value + "+two"


@application()
@function()
def two_steps(log: str) -> str:
    """step_one, then step_two on its value; step_two fails its first execution (no retries)."""
    return step_two.future(step_one.future(log), log)


class Person(BaseModel):
    name: str
    age: int


@application()
@function(description="greets a person")
def greet(person: Person, greeting: str = "hello") -> str:
    return f"{greeting} {person.name} ({person.age})"


@application()
@function()
def call_inc(x: int) -> int:
    """Calls another application deployed on the same server, by name (ENGINE_SERVER is set
    for executors by the server)."""
    return run_remote_application("inc", x).output() * 10


@function()
def zeros(size: int) -> bytes:
    return bytes(size)


@function()
def length(data: bytes) -> int:
    return len(data)


@application()
@function()
def large_value(size: int) -> int:
    """A `size`-byte value from one executor to another."""
    return length.future(zeros.future(size))
